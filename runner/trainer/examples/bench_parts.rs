//! Times the parts of a step on the current device, in one process (so MLX's kernel JIT is paid
//! once): compiled forward (eval loss), compiled forward+backward, and the full compiled train step.
//! `cargo run --release --example bench_parts -- CONFIG [float32|bfloat16] [ITERS] [TRAIN_GLOB]`
//! With TRAIN_GLOB the batch is real data (skewed token ids) instead of evenly spread ids.
use mixsweep_mlx::{Array, Compiled, value_and_grad};
use mixsweep_model::{ComputeDtype, ModelConfig};
use mixsweep_runner::executor::Executor;
use mixsweep_runner::optim::Plan;
use mixsweep_runner::step::{StepScalars, Steps, TrainState};
use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = ModelConfig::load(std::path::Path::new(&args[1]))?;
    let dtype = if args.get(2).map(String::as_str) == Some("bfloat16") {
        ComputeDtype::Bfloat16
    } else {
        ComputeDtype::Float32
    };
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(30);
    mixsweep_mlx::device::select(None)?;
    let program = Arc::new(cfg.lower());
    let host = mixsweep_runner::init::initial_weights(&program.weights, 1);
    let params = mixsweep_runner::init::upload(&program.weights, &host)?;
    let (b, t) = (cfg.training.batch_size(cfg.seq_len), cfg.seq_len);
    let tokens: Vec<i32> = match args.get(4) {
        Some(glob) => {
            let files = mixsweep_runner::data::expand_glob(glob, "train")?;
            let stream = mixsweep_runner::data::TokenStream::load(files, cfg.vocab_size)?;
            mixsweep_runner::data::train_batch(&stream, 1, 0, b, t).tokens
        }
        None => (0..b * t)
            .map(|i| ((i * 7919) % cfg.vocab_size) as i32)
            .collect(),
    };
    let x = Array::from_i32(&tokens, &[b, t])?;
    let tokens_per_iter = (b * t) as f64;
    let time = |name: &str, f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<()> {
        for _ in 0..3 {
            f()?;
        }
        let start = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        let dt = start.elapsed().as_secs_f64() / iters as f64;
        println!(
            "{name:>28} {:?}: {:8.2} ms  {:>12.0} tok/s",
            dtype,
            dt * 1e3,
            tokens_per_iter / dt
        );
        Ok(())
    };
    let n = params.len();
    let p1 = program.clone();
    let mut fwd = Compiled::new(
        move |ins: &[Array]| {
            let exec = Executor::new(&p1, dtype);
            Ok(vec![
                exec.forward(&ins[..n], &ins[n], Some(&ins[n + 1]), None)?
                    .loss
                    .unwrap(),
            ])
        },
        false,
    )?;
    let mut ins = params.clone();
    ins.push(x.clone());
    ins.push(x.clone());
    time("forward", &mut || {
        let o = fwd.call(&ins)?;
        o[0].eval()?;
        Ok(())
    })?;
    let p2 = program.clone();
    let mut fb = Compiled::new(
        move |ins: &[Array]| {
            let exec = Executor::new(&p2, dtype);
            let (tok, tgt) = (ins[n].clone(), ins[n + 1].clone());
            let (v, mut g) = value_and_grad(
                |ps: &[Array]| {
                    Ok(vec![
                        exec.forward(ps, &tok, Some(&tgt), None)?.loss.unwrap(),
                    ])
                },
                &ins[..n],
                &(0..n).collect::<Vec<_>>(),
            )?;
            g.insert(0, v[0].clone());
            Ok(g)
        },
        false,
    )?;
    time("forward+backward", &mut || {
        let o = fb.call(&ins)?;
        let refs: Vec<&Array> = o.iter().collect();
        mixsweep_mlx::eval(&refs)?;
        Ok(())
    })?;
    let plan = Arc::new(Plan::new(&cfg, &program));
    let mut steps = Steps::new(program.clone(), dtype, plan.clone())?;
    let mut state = TrainState::new(params.clone(), &plan)?;
    let mut k = 0u64;
    time("train step (sync)", &mut || {
        k += 1;
        let (l, g, _) = steps.train_step(
            &mut state,
            &x,
            &x,
            &StepScalars {
                lr_scale: 0.5,
                t: k,
                dropout_seed: k,
                qat: false,
            },
        )?;
        let mut all = vec![&l, &g];
        all.extend(state.arrays());
        mixsweep_mlx::eval(&all)?;
        Ok(())
    })?;
    Ok(())
}
