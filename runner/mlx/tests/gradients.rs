//! Every differentiable operation's gradient against central finite differences.

use mixsweep_mlx::{Array, Dtype, concatenate, split, value_and_grad, where_};

type F = fn(&[Array]) -> mixsweep_mlx::Result<Array>;

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// Checks d(sum(f(x) * w))/dx against finite differences, for every input.
fn check(name: &str, f: F, shapes: &[&[usize]], lo: f32, hi: f32) {
    let host: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| values(s.iter().product(), 17 + i as u64, lo, hi))
        .collect();
    let arrays = |h: &[Vec<f32>]| -> Vec<Array> {
        h.iter()
            .zip(shapes)
            .map(|(v, s)| Array::from_f32(v, s).unwrap())
            .collect()
    };
    // A fixed random projection makes the scalar sensitive to every output element.
    let out_shape = f(&arrays(&host)).unwrap().shape();
    let proj = Array::from_f32(
        &values(out_shape.iter().product(), 99, -1.0, 1.0),
        &out_shape,
    )
    .unwrap();
    let scalar = |ins: &[Array]| -> mixsweep_mlx::Result<Array> { f(ins)?.mul(&proj)?.sum_all() };
    let (_, grads) = value_and_grad(
        |ins| Ok(vec![scalar(ins)?]),
        &arrays(&host),
        &(0..shapes.len()).collect::<Vec<_>>(),
    )
    .unwrap();
    let eps = 1e-2f32;
    for (i, g) in grads.iter().enumerate() {
        assert_eq!(
            g.shape(),
            shapes[i].to_vec(),
            "{name}: gradient {i} has the wrong shape"
        );
        let g = g.to_vec_f32().unwrap();
        for j in 0..host[i].len() {
            let mut plus = host.clone();
            plus[i][j] += eps;
            let mut minus = host.clone();
            minus[i][j] -= eps;
            let fp = scalar(&arrays(&plus)).unwrap().item_f32().unwrap();
            let fm = scalar(&arrays(&minus)).unwrap().item_f32().unwrap();
            let numeric = (fp - fm) / (2.0 * eps);
            assert!(
                (numeric - g[j]).abs() <= 2e-2 * (1.0 + numeric.abs()),
                "{name}: d/dx{i}[{j}] analytic {} vs numeric {numeric}",
                g[j]
            );
        }
    }
}

#[test]
fn elementwise_gradients() {
    let s: &[&[usize]] = &[&[2, 3], &[2, 3]];
    check("add", |x| x[0].add(&x[1]), s, -1.0, 1.0);
    check("sub", |x| x[0].sub(&x[1]), s, -1.0, 1.0);
    check("mul", |x| x[0].mul(&x[1]), s, -1.0, 1.0);
    check("div", |x| x[0].div(&x[1]), s, 0.5, 2.0);
    check("maximum", |x| x[0].maximum(&x[1]), s, -1.0, 1.0);
    check("minimum", |x| x[0].minimum(&x[1]), s, -1.0, 1.0);
    check("power", |x| x[0].power(&x[1]), s, 0.5, 1.5);
    check("logaddexp", |x| x[0].logaddexp(&x[1]), s, -2.0, 2.0);
    let u: &[&[usize]] = &[&[2, 3]];
    check("neg", |x| x[0].neg(), u, -1.0, 1.0);
    check("exp", |x| x[0].exp(), u, -1.0, 1.0);
    check("log", |x| x[0].log(), u, 0.5, 2.0);
    check("log1p", |x| x[0].log1p(), u, 0.0, 2.0);
    check("sqrt", |x| x[0].sqrt(), u, 0.5, 2.0);
    check("rsqrt", |x| x[0].rsqrt(), u, 0.5, 2.0);
    check("square", |x| x[0].square(), u, -1.0, 1.0);
    check("tanh", |x| x[0].tanh(), u, -2.0, 2.0);
    check("sigmoid", |x| x[0].sigmoid(), u, -2.0, 2.0);
    check("erf", |x| x[0].erf(), u, -1.0, 1.0);
    check("abs", |x| x[0].abs(), u, 0.2, 1.0);
    check("sin", |x| x[0].sin(), u, -2.0, 2.0);
    check("cos", |x| x[0].cos(), u, -2.0, 2.0);
    check("clip", |x| x[0].clip(-0.5, 0.5), u, -0.4, 0.4);
    check("mul_scalar", |x| x[0].mul_scalar(3.0), u, -1.0, 1.0);
    check(
        "where",
        |x| {
            where_(
                &x[0].greater(&Array::scalar(0.0, Dtype::F32)?)?,
                &x[0],
                &x[0].square()?,
            )
        },
        u,
        -1.0,
        1.0,
    );
}

#[test]
fn reduction_and_shape_gradients() {
    let u: &[&[usize]] = &[&[2, 3, 4]];
    check("sum", |x| x[0].sum(&[1], false), u, -1.0, 1.0);
    check("mean", |x| x[0].mean(&[2], true), u, -1.0, 1.0);
    // offsets keep the maximum unique so finite differences do not cross a tie
    check(
        "max",
        |x| {
            x[0].add(&Array::arange(0.0, 24.0, 1.0, Dtype::F32)?.reshape(&[2, 3, 4])?)?
                .max(&[2], false)
        },
        u,
        -0.4,
        0.4,
    );
    check("logsumexp", |x| x[0].logsumexp(&[-1], false), u, -1.0, 1.0);
    check("softmax", |x| x[0].softmax(-1, true), u, -1.0, 1.0);
    check("cumsum", |x| x[0].cumsum(1, false, true), u, -1.0, 1.0);
    check(
        "cumsum_reverse_exclusive",
        |x| x[0].cumsum(2, true, false),
        u,
        -1.0,
        1.0,
    );
    check("reshape", |x| x[0].reshape(&[4, 6])?.square(), u, -1.0, 1.0);
    check(
        "transpose",
        |x| x[0].transpose(&[2, 0, 1])?.square(),
        u,
        -1.0,
        1.0,
    );
    check(
        "slice",
        |x| x[0].slice_axis(2, 1, 3)?.square(),
        u,
        -1.0,
        1.0,
    );
    check(
        "pad",
        |x| x[0].pad_axis(1, 2, 1, 0.0)?.square(),
        u,
        -1.0,
        1.0,
    );
    check(
        "expand_broadcast",
        |x| x[0].expand_dims(0)?.broadcast_to(&[2, 2, 3, 4])?.square(),
        u,
        -1.0,
        1.0,
    );
    check(
        "concatenate",
        |x| concatenate(&[&x[0], &x[0].square()?], 1),
        u,
        -1.0,
        1.0,
    );
    check(
        "split",
        |x| {
            // parts used differently, the third unused: its cotangent is zero
            let parts = split(&x[0], &[1, 2], 1)?;
            parts[0].square()?.add(&parts[1].sum(&[1], true)?.sin()?)
        },
        u,
        -1.0,
        1.0,
    );
    check(
        "astype_roundtrip",
        |x| x[0].astype(Dtype::F32)?.square(),
        u,
        -1.0,
        1.0,
    );
    check(
        "take_along_axis",
        |x| x[0].take_along_axis(&Array::from_i32(&[0, 3, 1, 2, 2, 0], &[2, 3, 1])?, 2),
        u,
        -1.0,
        1.0,
    );
    check(
        "take",
        |x| x[0].take(&Array::from_i32(&[1, 0, 1], &[3])?, 0),
        u,
        -1.0,
        1.0,
    );
}

#[test]
fn matmul_and_fast_kernel_gradients() {
    check(
        "matmul",
        |x| x[0].matmul(&x[1]),
        &[&[2, 3], &[3, 4]],
        -1.0,
        1.0,
    );
    check(
        "rms_norm",
        |x| x[0].rms_norm(Some(&x[1]), 1e-5),
        &[&[3, 4], &[4]],
        -1.0,
        1.0,
    );
    check(
        "layer_norm",
        |x| x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5),
        &[&[3, 4], &[4], &[4]],
        -1.0,
        1.0,
    );
    check(
        "rope_traditional",
        |x| x[0].rope(4, true, 10000.0, 0),
        &[&[1, 2, 3, 4]],
        -1.0,
        1.0,
    );
    check(
        "rope_half",
        |x| x[0].rope(2, false, 10000.0, 0),
        &[&[1, 2, 3, 4]],
        -1.0,
        1.0,
    );
    check(
        "sdpa_causal",
        |x| x[0].scaled_dot_product_attention(&x[1], &x[2], 0.5, true),
        &[&[1, 2, 3, 4], &[1, 2, 3, 4], &[1, 2, 3, 4]],
        -1.0,
        1.0,
    );
    check(
        "sdpa_gqa",
        |x| x[0].scaled_dot_product_attention(&x[1], &x[2], 0.5, true),
        &[&[1, 4, 3, 2], &[1, 2, 3, 2], &[1, 2, 3, 2]],
        -1.0,
        1.0,
    );
}
