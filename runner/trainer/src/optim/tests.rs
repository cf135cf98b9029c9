//! Each rule's update against the formula worked by hand (in f64) on small tensors.

use super::*;
use mixsweep_model::config::optimizer::MuonVariant;

fn arr(v: &[f32], shape: &[usize]) -> Array {
    Array::from_f32(v, shape).unwrap()
}

fn scalar(v: f32) -> Array {
    Array::scalar(v, Dtype::F32).unwrap()
}

fn close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "got {got:?}, want {want:?}"
        );
    }
}

fn update(
    o: &dyn Optimizer,
    p: &Array,
    g: &Array,
    state: &[Array],
    lr: f32,
    wd: f32,
    t: f32,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (lr_a, t_a) = (scalar(lr), scalar(t));
    let s = StepInputs { t: &t_a };
    let (p2, st) = o.update(p, g, state, &lr_a, wd, &s).unwrap();
    (
        p2.to_vec_f32().unwrap(),
        st.iter().map(|a| a.to_vec_f32().unwrap()).collect(),
    )
}

#[test]
fn adamw_second_step_with_decay_by_hand() {
    let o = AdamW {
        beta1: 0.9,
        beta2: 0.95,
        epsilon: 1e-8,
    };
    let (p, g) = (1.5f64, -0.4f64);
    let (m0, v0) = (0.2f64, 0.01f64);
    let (lr, wd) = (0.1f64, 0.5f64);
    let (p2, st) = update(
        &o,
        &arr(&[p as f32], &[1]),
        &arr(&[g as f32], &[1]),
        &[arr(&[m0 as f32], &[1]), arr(&[v0 as f32], &[1])],
        lr as f32,
        wd as f32,
        2.0,
    );
    let m = 0.9 * m0 + 0.1 * g;
    let v = 0.95 * v0 + 0.05 * g * g;
    let (mh, vh) = (m / (1.0 - 0.9f64.powi(2)), v / (1.0 - 0.95f64.powi(2)));
    let want = p - lr * wd * p - lr * mh / (vh.sqrt() + 1e-8);
    close(&p2, &[want], 1e-5);
    close(&st[0], &[m], 1e-6);
    close(&st[1], &[v], 1e-6);
}

/// On a diagonal gradient Newton-Schulz acts on each singular value alone: `s <- a s + b s³ + c s⁵`
/// starting from `s / ||G||_F`.
#[test]
fn muon_orthogonalises_like_the_quintic_iteration() {
    let o = Muon {
        variant: MuonVariant::Plain,
        momentum: 0.5,
        steps: 5,
        nesterov: true,
        beta2: 0.95,
        dtype: Dtype::F32,
    };
    // a [3, 2] (tall) weight: aspect factor sqrt(3/2)
    let g = [2.0f64, 0.0, 0.0, 0.5, 0.0, 0.0];
    let m0 = [1.0f64, 0.0, 0.0, 1.0, 0.0, 0.0];
    let (lr, wd) = (0.01f64, 0.1f64);
    let p = [0.3f32; 6];
    let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
    let (p2, st) = update(
        &o,
        &arr(&p, &[3, 2]),
        &arr(&to32(&g), &[3, 2]),
        &[arr(&to32(&m0), &[3, 2])],
        lr as f32,
        wd as f32,
        1.0,
    );
    let m: Vec<f64> = m0.iter().zip(&g).map(|(m, g)| 0.5 * m + g).collect();
    close(&st[0], &m, 1e-6);
    let u: Vec<f64> = g.iter().zip(&m).map(|(g, m)| g + 0.5 * m).collect(); // Nesterov
    let fro = u.iter().map(|x| x * x).sum::<f64>().sqrt() + 1e-7;
    let ns = |x: f64| {
        (0..5).fold(x / fro, |s, _| {
            3.4445 * s - 4.7750 * s.powi(3) + 2.0315 * s.powi(5)
        })
    };
    let aspect = 1.5f64.sqrt();
    let want: Vec<f64> = u
        .iter()
        .map(|&x| {
            let o = if x == 0.0 { 0.0 } else { ns(x) };
            0.3 - lr * wd * 0.3 - lr * aspect * o
        })
        .collect();
    close(&p2, &want, 1e-5);
}

#[test]
fn muon_variants_normalise_rows_or_keep_the_norm() {
    let g = arr(&[0.3, -1.2, 0.7, 0.1, 0.9, -0.4, 0.2, 0.5], &[2, 4]);
    let p = Array::zeros(&[2, 4], Dtype::F32).unwrap();
    let eq = Muon {
        variant: MuonVariant::EqR,
        momentum: 0.0,
        steps: 5,
        nesterov: false,
        beta2: 0.95,
        dtype: Dtype::F32,
    };
    let (p2, _) = update(
        &eq,
        &p,
        &g,
        &[Array::zeros(&[2, 4], Dtype::F32).unwrap()],
        1.0,
        0.0,
        1.0,
    );
    for row in p2.chunks(4) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (n - 1.0).abs() < 1e-4,
            "each row of the update has unit norm: {p2:?}"
        );
    }
    let plain = Muon {
        variant: MuonVariant::Plain,
        ..eq
    };
    let nor = Muon {
        variant: MuonVariant::NorMuon,
        ..plain
    };
    let zeros = |s: &[usize]| Array::zeros(s, Dtype::F32).unwrap();
    let (a, _) = update(&plain, &p, &g, &[zeros(&[2, 4])], 1.0, 0.0, 1.0);
    let (b, st) = update(&nor, &p, &g, &[zeros(&[2, 4]), zeros(&[4])], 1.0, 0.0, 1.0);
    let fro = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (fro(&a) - fro(&b)).abs() < 1e-4,
        "NorMuon keeps ||U||_F: {} vs {}",
        fro(&a),
        fro(&b)
    );
    assert_eq!(
        st[1].len(),
        4,
        "one second moment per column (the longer dimension)"
    );
    assert!(st[1].iter().all(|v| *v > 0.0));
}

#[test]
fn lamb_scales_by_the_trust_ratio() {
    let o = Lamb {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        trust_ratio_cap: 10.0,
    };
    let p = [3.0f64, 4.0];
    let g = [0.1f64, -0.2];
    let (lr, wd) = (0.01f64, 0.1f64);
    let to32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
    let zeros = Array::zeros(&[2], Dtype::F32).unwrap();
    let (p2, _) = update(
        &o,
        &arr(&to32(&p), &[2]),
        &arr(&to32(&g), &[2]),
        &[zeros.clone(), zeros],
        lr as f32,
        wd as f32,
        1.0,
    );
    // t = 1: m̂ = g, v̂ = g², so the Adam direction is g / (|g| + eps)
    let u: Vec<f64> = p
        .iter()
        .zip(&g)
        .map(|(p, g)| g / (g.abs() + 1e-6) + wd * p)
        .collect();
    let r = (p.iter().map(|x| x * x).sum::<f64>().sqrt()
        / u.iter().map(|x| x * x).sum::<f64>().sqrt())
    .min(10.0);
    let want: Vec<f64> = p.iter().zip(&u).map(|(p, u)| p - lr * r * u).collect();
    close(&p2, &want, 1e-5);
}

#[test]
fn a_non_finite_loss_or_gradient_leaves_weights_and_state_alone() {
    let cfg = mixsweep_model::ModelConfig::from_jsonc(
        r#"{"model_dim":8,"vocab_size":16,"seq_len":4,"blocks":[{"type":"swiglu"}],"training":{"batch_tokens":8,"grad_clip":1}}"#,
    )
    .unwrap();
    let program = cfg.lower();
    let plan = Plan::new(&cfg, &program);
    assert_eq!(
        plan.describe(),
        "muon (matrix), adamw (embed, head, scalar)"
    );
    let params: Vec<Array> = program
        .weights
        .iter()
        .map(|w| Array::full(&w.shape, 0.5, Dtype::F32).unwrap())
        .collect();
    let state = plan.initial_state().unwrap();
    let lrs: Vec<Array> = plan.group_lrs(1.0).into_iter().map(scalar).collect();
    let s = StepInputs { t: &scalar(1.0) };
    for (loss, bad) in [(f32::NAN, false), (1.0, true)] {
        let grads: Vec<Array> = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let v = if bad && i == 1 { f32::INFINITY } else { 0.1 };
                Array::full(&p.shape(), v, Dtype::F32).unwrap()
            })
            .collect();
        let (_, p2, s2) = plan
            .step(&scalar(loss), &params, &grads, &state, &lrs, &s)
            .unwrap();
        for (a, b) in p2.iter().zip(&params) {
            assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
        }
        assert!(
            s2.iter()
                .flatten()
                .all(|a| a.to_vec_f32().unwrap().iter().all(|v| *v == 0.0))
        );
    }
}

/// Muon orthogonalises a group of same-shape weights in one batched iteration; each result equals
/// the weight's own update.
#[test]
fn a_batched_muon_group_equals_its_members_updated_alone() {
    for variant in [MuonVariant::Plain, MuonVariant::EqR, MuonVariant::NorMuon] {
        let o = Muon {
            variant,
            momentum: 0.9,
            steps: 5,
            nesterov: true,
            beta2: 0.95,
            dtype: Dtype::F32,
        };
        let w = |seed: usize| {
            arr(
                &(0..12)
                    .map(|i| ((i * 7 + seed * 5) % 11) as f32 / 11.0 - 0.5)
                    .collect::<Vec<_>>(),
                &[4, 3],
            )
        };
        let (ps, gs) = ([w(1), w(2)], [w(3), w(4)]);
        let states: Vec<Vec<Array>> = (0..2)
            .map(|_| {
                o.slots(&[4, 3])
                    .iter()
                    .map(|(_, s)| Array::zeros(s, Dtype::F32).unwrap())
                    .collect()
            })
            .collect();
        let (lr, t) = (scalar(0.1), scalar(1.0));
        let s = StepInputs { t: &t };
        let h = 0.0;
        let group = Group {
            params: ps.iter().collect(),
            grads: gs.iter().collect(),
            states: states.iter().map(Vec::as_slice).collect(),
        };
        let together = o.update_group(group, &lr, h, &s).unwrap();
        for i in 0..2 {
            let (alone, _) = o.update(&ps[i], &gs[i], &states[i], &lr, h, &s).unwrap();
            let (a, b) = (
                alone.to_vec_f32().unwrap(),
                together[i].0.to_vec_f32().unwrap(),
            );
            assert!(
                a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6),
                "{variant:?} weight {i}: {a:?} vs {b:?}"
            );
        }
    }
}

fn plan_of(training: &str) -> Plan {
    let cfg = mixsweep_model::ModelConfig::from_jsonc(&format!(
        r#"{{"model_dim":8,"vocab_size":16,"seq_len":4,"blocks":[{{"type":"plain","heads":2}},{{"type":"swiglu"}}],
            "training":{{"batch_tokens":8,{training}}}}}"#
    ))
    .unwrap();
    Plan::new(&cfg, &cfg.lower())
}

/// Plans that differ only in learning rates trace the same step; their rates come in as inputs.
#[test]
fn learning_rates_are_inputs_not_part_of_the_trace() {
    let a = plan_of(r#""lr":1e-3"#);
    let b = plan_of(r#""lr":3e-3"#);
    assert_eq!(a.trace_key(), b.trace_key());
    assert_eq!(a.group_count(), a.group_lrs(1.0).len());
    let (la, lb) = (a.group_lrs(0.5), b.group_lrs(0.5));
    assert_ne!(la, lb);
    // host float32 products, as the traced `lr_scale · lr` was
    assert!(la.contains(&(0.5f32 * 1e-3f32)), "{la:?}");
    assert!(lb.contains(&(0.5f32 * 3e-3f32)), "{lb:?}");
}

/// What the trace bakes in (decay, betas, clipping, which groups share a rate) separates plans.
#[test]
fn baked_hyperparameters_separate_trace_keys() {
    let base = plan_of(r#""lr":1e-3"#).trace_key();
    for other in [
        r#""lr":1e-3,"weight_decay":0.1"#,
        r#""lr":1e-3,"beta2":0.9"#,
        r#""lr":1e-3,"grad_clip":0.5"#,
        r#""lr":1e-3,"optimizer":"adamw""#,
    ] {
        assert_ne!(plan_of(other).trace_key(), base, "{other}");
    }
}
