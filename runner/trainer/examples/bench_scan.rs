//! Times the fused selective scan alone on the GPU: the forward kernel, and forward + backward
//! (the gradients of all five inputs), each compiled, at Mamba's shapes.
//! `cargo run --release --example bench_scan -- [BATCH SEQ INNER STATE] [ITERS]`
//! (default 64 256 768 16, the example's; `MIXSWEEP_SCAN_TUNE` picks the kernels' launch shape).
use mixsweep_mlx::{Array, Compiled, Dtype, kernels, random, value_and_grad};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (b, t, i, n) = match args[..] {
        [b, t, i, n, ..] => (b, t, i, n),
        _ => (64, 256, 768, 16),
    };
    let iters = args.get(4).copied().unwrap_or(50);
    mixsweep_mlx::device::select(None)?;
    anyhow::ensure!(
        kernels::fused_scan_available(),
        "the fused scan needs a CUDA GPU"
    );
    let u = |shape: &[usize], seed: u64, lo: f32, hi: f32| -> anyhow::Result<Array> {
        let r = random::uniform(shape, Dtype::F32, &random::key(seed)?)?;
        Ok(r.mul_scalar(hi - lo)?.add_scalar(lo)?)
    };
    let x = u(&[b, t, i], 1, -1.0, 1.0)?;
    let delta = u(&[b, t, i], 2, 0.001, 0.1)?;
    let a = u(&[i, n], 3, -16.0, -1.0)?;
    let bm = u(&[b, t, n], 4, -1.0, 1.0)?;
    let cm = u(&[b, t, n], 5, -1.0, 1.0)?;
    let ins = [x, delta, a, bm, cm];
    mixsweep_mlx::eval(&ins.iter().collect::<Vec<_>>())?;
    let scan = |v: &[Array]| kernels::fused_selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], 64);
    let mut fwd = Compiled::new(move |v: &[Array]| Ok(vec![scan(v)?.sum_all()?]), false)?;
    let mut both = Compiled::new(
        move |v: &[Array]| {
            let (vals, grads) = value_and_grad(
                |w: &[Array]| Ok(vec![scan(w)?.square()?.sum_all()?]),
                v,
                &[0, 1, 2, 3, 4],
            )?;
            Ok(vals.into_iter().chain(grads).collect())
        },
        false,
    )?;
    let time = |name: &str, f: &mut Compiled| -> anyhow::Result<()> {
        for _ in 0..3 {
            let out = f.call(&ins)?;
            mixsweep_mlx::eval(&out.iter().collect::<Vec<_>>())?;
        }
        let start = Instant::now();
        for _ in 0..iters {
            let out = f.call(&ins)?;
            mixsweep_mlx::eval(&out.iter().collect::<Vec<_>>())?;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / iters as f64;
        let tune = std::env::var("MIXSWEEP_SCAN_TUNE").unwrap_or_else(|_| "default".into());
        println!("scan [{b}, {t}, {i}, {n}] {name:>16} {tune:>14}: {ms:7.3} ms");
        Ok(())
    };
    time("forward", &mut fwd)?;
    time("forward+backward", &mut both)
}
