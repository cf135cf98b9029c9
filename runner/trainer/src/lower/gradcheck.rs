//! The gradient of every op lowering that adds math on top of MLX's primitives (chunked scans,
//! masks, XSA, norms, RoPE, bags) against central finite differences, in float32 at shapes that
//! cross chunk boundaries.

use super::test_support::host as values;
use super::{Ctx, apply};
use mixsweep_mlx::{Array, Dtype, value_and_grad};
use mixsweep_model::ops::*;
use std::collections::HashMap;

/// Runs `op` on float inputs (ints are passed through `fixed`) in training-free mode.
fn run(op: &Op, ins: &[Array]) -> mixsweep_mlx::Result<Array> {
    let masters = HashMap::new();
    let ids: Vec<usize> = (0..ins.len()).map(|i| 1000 + i).collect();
    let mut ctx = Ctx {
        dtype: Dtype::F32,
        dropout_keys: None,
        cache: None,
        node: 0,
        masters: &masters,
        input_ids: &ids,
        batch: ins[0].dim(0),
        seq: ins[0].shape().get(1).copied().unwrap_or(1),
    };
    Ok(apply(op, ins, &mut ctx)?.remove(0))
}

/// d(sum(op(x) ⊙ P))/dx for every input `x` in `ranges` (others held at `fixed`), against finite
/// differences. `ranges[i] = None` marks a non-differentiable input given in `fixed[i]`.
fn check(
    op: impl Into<Op>,
    shapes: &[&[usize]],
    ranges: &[Option<(f32, f32)>],
    fixed: &[Option<Array>],
) {
    let op: Op = op.into();
    let name = op.rule().name();
    let host: Vec<Vec<f32>> = shapes
        .iter()
        .zip(ranges)
        .enumerate()
        .map(|(i, (s, r))| {
            let (lo, hi) = r.unwrap_or((0.0, 0.0));
            values(s.iter().product(), 31 + i as u64, lo, hi)
        })
        .collect();
    let arrays = |h: &[Vec<f32>]| -> Vec<Array> {
        h.iter()
            .zip(shapes)
            .enumerate()
            .map(|(i, (v, s))| match fixed.get(i).cloned().flatten() {
                Some(a) => a,
                None => Array::from_f32(v, s).unwrap(),
            })
            .collect()
    };
    let out = run(&op, &arrays(&host)).unwrap().shape();
    let proj = Array::from_f32(&values(out.iter().product(), 7, -1.0, 1.0), &out).unwrap();
    let scalar = |ins: &[Array]| run(&op, ins)?.mul(&proj)?.sum_all();
    let wrt: Vec<usize> = (0..shapes.len()).filter(|&i| ranges[i].is_some()).collect();
    let (_, grads) = value_and_grad(|ins| Ok(vec![scalar(ins)?]), &arrays(&host), &wrt).unwrap();
    let eps = 1e-2f32;
    for (g, &i) in grads.iter().zip(&wrt) {
        let g = g.to_vec_f32().unwrap();
        assert_eq!(
            g.len(),
            host[i].len(),
            "{name}: gradient {i} has the wrong size"
        );
        for j in 0..host[i].len() {
            let at = |delta: f32| {
                let mut h = host.clone();
                h[i][j] += delta;
                scalar(&arrays(&h)).unwrap().item_f32().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - g[j]).abs() <= 3e-2 * (1.0 + numeric.abs()),
                "{name}: d/d input {i} [{j}]: analytic {} vs numeric {numeric}",
                g[j]
            );
        }
    }
}

const ANY: Option<(f32, f32)> = Some((-1.0, 1.0));

#[test]
fn attention_with_windows_and_grouped_heads() {
    for mask in [
        AttentionMask::Causal,
        AttentionMask::Window(2),
        AttentionMask::Full,
    ] {
        let op = Attention {
            scale: 0.5,
            mask,
            dropout: 0.0,
            ordinal: 0,
        };
        check(
            op,
            &[&[1, 4, 5, 3], &[1, 2, 5, 3], &[1, 2, 5, 3]],
            &[ANY, ANY, ANY],
            &[],
        );
    }
}

#[test]
fn attention_with_distance_slopes() {
    for mask in [AttentionMask::Causal, AttentionMask::Full] {
        let op = Attention {
            scale: 0.5,
            mask,
            dropout: 0.0,
            ordinal: 0,
        };
        check(
            op,
            &[&[1, 4, 5, 3], &[1, 2, 5, 3], &[1, 2, 5, 3], &[4]],
            &[ANY, ANY, ANY, Some((0.1, 0.9))],
            &[],
        );
    }
}

#[test]
fn attention_between_tokens_and_latents() {
    let op = |mask| Attention {
        scale: 0.5,
        mask,
        dropout: 0.0,
        ordinal: 0,
    };
    // 3 latents reading 7 tokens in segments of 3, and 7 tokens reading them (rows 0 and 1 see none)
    check(
        op(AttentionMask::SegmentPrefix { segment: 3 }),
        &[&[1, 2, 3, 4], &[1, 2, 7, 4], &[1, 2, 7, 4]],
        &[ANY, ANY, ANY],
        &[],
    );
    check(
        op(AttentionMask::SegmentEnds { segment: 3 }),
        &[&[1, 2, 7, 4], &[1, 2, 3, 4], &[1, 2, 3, 4]],
        &[ANY, ANY, ANY],
        &[],
    );
}

#[test]
fn top_k_gates_and_load_balance() {
    check(TopK { k: 2 }, &[&[2, 3, 5]], &[Some((0.1, 0.9))], &[]);
    let mask = Array::from_f32(
        &(0..30)
            .map(|i| if i % 5 < 2 { 1.0 } else { 0.0 })
            .collect::<Vec<_>>(),
        &[2, 3, 5],
    )
    .unwrap();
    check(
        LoadBalance { weight: 0.5, k: 2 },
        &[&[2, 3, 5], &[2, 3, 5]],
        &[ANY, None],
        &[None, Some(mask)],
    );
}

#[test]
fn xsa() {
    check(
        Xsa,
        &[&[1, 4, 3, 2], &[1, 2, 3, 2]],
        &[ANY, Some((0.5, 1.0))],
        &[],
    );
}

#[test]
fn norms_and_rope() {
    for kind in [NormKind::Rms, NormKind::Layer] {
        let op = Norm { kind, eps: 1e-5 };
        check(op.clone(), &[&[2, 3, 4], &[4]], &[ANY, ANY], &[]);
        if kind == NormKind::Layer {
            check(op, &[&[2, 3, 4], &[4], &[4]], &[ANY, ANY, ANY], &[]);
        }
    }
    for adjacent_pairs in [true, false] {
        let op = Rope {
            dims: 4,
            base: 100.0,
            adjacent_pairs,
        };
        check(op, &[&[1, 2, 3, 6]], &[ANY], &[]);
    }
}

#[test]
fn scans_across_chunk_boundaries() {
    let gate = Some((0.2, 0.9));
    check(
        GatedScan { chunk: 3 },
        &[&[2, 7, 3], &[3]],
        &[ANY, ANY],
        &[],
    );
    check(
        ScanTv { chunk: 3 },
        &[&[2, 7, 3], &[2, 7, 3]],
        &[ANY, gate],
        &[],
    );
    for decay_shape in [&[3][..], &[2, 7, 3]] {
        check(
            DecayScan { chunk: 3 },
            &[&[2, 7, 3], decay_shape],
            &[ANY, gate],
            &[],
        );
    }
    // S4D's LTI bank, trained as a Toeplitz convolution (decay within (0, 1), any phase)
    check(
        LtiConv,
        &[&[2, 7, 3], &[3, 2], &[3, 2], &[3, 2], &[3, 2]],
        &[ANY, Some((0.3, 0.95)), Some((-2.0, 2.0)), ANY, ANY],
        &[],
    );
    check(
        MaxPlusScan,
        &[&[2, 7, 3], &[2, 7, 3]],
        &[ANY, Some((-2.0, 2.0))],
        &[],
    );
    check(
        MatrixScan { chunk: 3 },
        &[&[1, 7, 2, 3], &[1, 7, 2]],
        &[ANY, gate],
        &[],
    );
    let shapes: &[&[usize]] = &[
        &[1, 7, 3],
        &[1, 7, 3],
        &[3, 2],
        &[1, 7, 2],
        &[1, 7, 2],
        &[3],
    ];
    let ranges = [ANY, Some((0.1, 0.6)), Some((-1.0, 0.5)), ANY, ANY, ANY];
    check(SelectiveScan { chunk: 3 }, shapes, &ranges, &[]);
}

#[test]
fn convolution_token_shift_and_embedding_bag() {
    check(
        CausalConv,
        &[&[2, 5, 3], &[3, 3], &[3]],
        &[ANY, ANY, ANY],
        &[],
    );
    check(TokenShift, &[&[2, 4, 3]], &[ANY], &[]);
    // ids with a padding 0 and a repeated id in one bag
    let ids = Array::from_f32(&[1.0, 0.0, 2.0, 2.0, 3.0, 1.0], &[1, 3, 2])
        .unwrap()
        .astype(Dtype::I32)
        .unwrap();
    check(
        EmbeddingBag,
        &[&[4, 3], &[1, 3, 2]],
        &[ANY, None],
        &[None, Some(ids)],
    );
    for kind in [
        UnaryKind::Softcap { cap: 2.0 },
        UnaryKind::Sin,
        UnaryKind::Cos,
    ] {
        check(Unary(kind), &[&[2, 3]], &[Some((-4.0, 4.0))], &[]);
    }
}

#[test]
fn gated_delta_rule_across_chunks() {
    // 7 steps in chunks of 3: two full chunks and a padded one
    let (b, t, h, dk, dv) = (1, 7, 2, 3, 2);
    check(
        DeltaScan { chunk: 3 },
        &[
            &[b, t, h, dk],
            &[b, t, h, dk],
            &[b, t, h, dv],
            &[b, t, h],
            &[b, t, h],
        ],
        &[
            ANY,
            Some((-0.6, 0.6)),
            ANY,
            Some((0.1, 0.9)),
            Some((-0.8, -0.05)),
        ],
        &[],
    );
}

#[test]
fn gated_linear_attention_across_chunks() {
    // 7 steps in chunks of 3; decays low enough to reach the per-step floor (-64/3 is far below)
    let (b, t, h, dk, dv) = (1, 7, 2, 3, 2);
    check(
        GlaScan { chunk: 3 },
        &[
            &[b, t, h, dk],
            &[b, t, h, dk],
            &[b, t, h, dv],
            &[b, t, h, dk],
        ],
        &[ANY, ANY, ANY, Some((0.05, 0.95))],
        &[],
    );
}

#[test]
fn mamba3_trapezoid_scan_across_chunks() {
    // 7 steps in chunks of 3, two groups of two channels, two state pairs
    let (b, t, i, g, n) = (1, 7, 4, 2, 4);
    check(
        Mamba3Scan { chunk: 3 },
        &[
            &[b, t, i],
            &[b, t, i],
            &[b, t, i],
            &[b, t, i, n / 2],
            &[b, t, g, n],
            &[b, t, g, n],
            &[i, n],
        ],
        &[
            ANY,
            Some((0.1, 0.8)),
            Some((0.1, 0.9)),
            Some((-1.5, 1.5)),
            ANY,
            ANY,
            Some((-1.0, 1.0)),
        ],
        &[],
    );
}
