//! Test support for the lowerings: deterministic inputs ([`host`], also the finite-difference checks'),
//! and a check that a fused CUDA kernel's outputs and gradients equal its portable form's (MLX
//! autodiff of both, through a fixed random projection of the output), used by the `--ignored` GPU
//! tests beside each kernel's lowering.

use mixsweep_mlx::{Array, Result};

/// `n` values in `[lo, hi)` from `seed`.
pub fn host(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = mixsweep_model::rng::SplitMix64::new(seed);
    (0..n)
        .map(|_| lo + (hi - lo) * r.next_f64() as f32)
        .collect()
}

/// Asserts that `fused(inputs)` and `reference(inputs)` agree, and so do their gradients in every
/// input: the output within 2e-3 of its largest magnitude, gradient `k` within `grad_rel[k]`; and
/// that the kernels ran precompiled (unless `MIXSWEEP_KERNEL_JIT=mlx`).
/// `names` label the gradients, `case` the problem.
pub fn assert_fused_matches(
    inputs: &[Array],
    fused: impl Fn(&[Array]) -> Result<Array>,
    reference: impl Fn(&[Array]) -> Result<Array>,
    names: &[&str],
    grad_rel: &[f32],
    case: &str,
) {
    let out_shape = reference(inputs).unwrap().shape();
    let n: usize = out_shape.iter().product();
    let proj = Array::from_f32(&host(n, 99, -1.0, 1.0), &out_shape).unwrap();
    let argnums: Vec<usize> = (0..inputs.len()).collect();
    let run = |f: &dyn Fn(&[Array]) -> Result<Array>| {
        let proj = proj.clone();
        mixsweep_mlx::value_and_grad(
            move |x| {
                let y = f(x)?;
                Ok(vec![y.mul(&proj)?.sum_all()?, y])
            },
            inputs,
            &argnums,
        )
        .unwrap()
    };
    let (want_values, want_grads) = run(&reference);
    let (got_values, got_grads) = run(&fused);
    let close = |name: &str, got: &Array, want: &Array, rel: f32| {
        let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        assert_eq!(g.len(), w.len(), "{name}: size ({case})");
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = g
            .iter()
            .zip(&w)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= rel * scale,
            "{name} ({case}): max error {err} vs scale {scale}"
        );
    };
    // the fused side ran from binaries compiled once per machine (custom_kernel.cpp), not a fallback
    if std::env::var("MIXSWEEP_KERNEL_JIT").as_deref() != Ok("mlx") {
        assert!(
            mixsweep_mlx::kernels::kernels_precompiled(),
            "custom kernels fell back to MLX's per-process JIT ({case}): see the warning above"
        );
    }
    close("output", &got_values[1], &want_values[1], 2e-3);
    for (k, name) in names.iter().enumerate() {
        close(name, &got_grads[k], &want_grads[k], grad_rel[k]);
    }
}
