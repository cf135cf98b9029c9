//! Writes the graph of one train step (uncompiled) as Graphviz DOT and prints its node count:
//! `cargo run --example step_graph -- CONFIG [float32|bfloat16] OUT.dot`. Used to compare how many
//! operations a step launches against a reference trainer's graph.
use mixsweep_mlx::{Array, set_compile_enabled};
use mixsweep_model::{ComputeDtype, ModelConfig};
use mixsweep_runner::optim::Plan;
use mixsweep_runner::step::{StepScalars, Steps, TrainState};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = ModelConfig::load(std::path::Path::new(&args[1]))?;
    let dtype = if args.get(2).map(String::as_str) == Some("bfloat16") {
        ComputeDtype::Bfloat16
    } else {
        ComputeDtype::Float32
    };
    let out = args.get(3).cloned().unwrap_or_else(|| "step.dot".into());
    set_compile_enabled(false)?;
    let program = Arc::new(cfg.lower());
    let host = mixsweep_runner::init::initial_weights(&program.weights, 1);
    let params = mixsweep_runner::init::upload(&program.weights, &host)?;
    let plan = Arc::new(Plan::new(&cfg, &program));
    let mut state = TrainState::new(params, &plan)?;
    let mut steps = Steps::new(program.clone(), dtype, plan)?;
    let (b, t) = (cfg.training.batch_size(cfg.seq_len), cfg.seq_len);
    let tokens: Vec<i32> = (0..b * t).map(|i| (i % cfg.vocab_size) as i32).collect();
    let x = Array::from_i32(&tokens, &[b, t])?;
    let (loss, norm, _) = steps.train_step(
        &mut state,
        &x,
        &x,
        &StepScalars {
            lr_scale: 1.0,
            t: 1,
            dropout_seed: 0,
            qat: false,
        },
    )?;
    let mut all = vec![&loss, &norm];
    all.extend(state.arrays());
    mixsweep_mlx::export_dot(&all, std::path::Path::new(&out))?;
    let text = std::fs::read_to_string(&out)?;
    println!(
        "{out}: {} nodes",
        text.lines()
            .filter(|l| l.contains("label") && l.contains("shape=rectangle"))
            .count()
    );
    Ok(())
}
