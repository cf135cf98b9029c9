//! `count` (sizes and FLOPs of a config, no MLX needed) and `smoke` (the MLX install and one
//! compiled train step).

use crate::cli::DeviceArg;
use anyhow::Context;
use mixsweep_model::{ComputeDtype, ModelConfig};
use mixsweep_runner::train::TrainError;
use std::sync::Arc;

pub fn count(config: &std::path::Path, json: bool) -> Result<(), TrainError> {
    let cfg = ModelConfig::load(config)?;
    let counts = cfg.counts();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&counts).expect("counts serialize")
        );
        return Ok(());
    }
    let tokens = cfg.training.batch_tokens as f64;
    println!("Total parameters: {}", counts.params);
    if counts.active_params != counts.params {
        println!(
            "Active parameters per token: {} (top-k of the experts)",
            counts.active_params
        );
    }
    println!(
        "Total size (float32, in MiB): {:.2}",
        counts.bytes_f32 as f64 / (1 << 20) as f64
    );
    println!("Number of blocks: {}", counts.blocks);
    println!("Number of weights: {}", counts.weights);
    println!("Number of IR ops: {}", counts.ir_ops);
    println!(
        "Inference state per sequence at context {}: {} values ({:.2} MiB in bfloat16)",
        cfg.seq_len,
        counts.inference_state_values,
        counts.inference_state_values as f64 * 2.0 / (1 << 20) as f64
    );
    println!(
        "Forward FLOPs: {}",
        format_flops(counts.forward_flops_per_token * tokens)
    );
    println!(
        "Training step FLOPs: {}",
        format_flops(counts.train_flops_per_token * tokens)
    );
    println!(
        "FLOPs per token: {}",
        format_flops(counts.train_flops_per_token)
    );
    let by_rule: Vec<String> = counts
        .params_by_optimizer
        .iter()
        .map(|(r, n)| format!("{r} {n} params"))
        .collect();
    let default = if cfg.training.optimizer.explicit {
        ""
    } else {
        ", mixlab's default"
    };
    println!(
        "Optimizer: {} ({}{default})",
        cfg.training.optimizer.describe(),
        by_rule.join(", ")
    );
    Ok(())
}

pub fn smoke(d: DeviceArg) -> anyhow::Result<()> {
    use mixsweep_runner::optim::Plan;
    use mixsweep_runner::step::{StepScalars, Steps, TrainState};
    println!("=== SMOKE: MLX ===");
    let version = mixsweep_mlx::version().context("reading the MLX version")?;
    let dev = mixsweep_mlx::device::select(d.device()).context("selecting the device")?;
    println!("PASS: MLX {version} available, device: {dev}");
    // where MLX's CPU matmuls go (the runner preloads OpenBLAS over the wheel's reference BLAS)
    let blas = mixsweep_runner::blas::cblas_provider();
    println!("cpu blas: {}", blas.as_deref().unwrap_or("none found"));
    let cfg = ModelConfig::from_jsonc(
        r#"{"name":"smoke","model_dim":32,"vocab_size":64,"seq_len":16,
            "blocks":[{"type":"plain","heads":2},{"type":"swiglu"},{"type":"mamba","state_size":4}],
            "training":{"batch_tokens":64,"grad_clip":1,"seed":1}}"#,
    )?;
    let program = Arc::new(cfg.lower());
    let host = mixsweep_runner::init::initial_weights(&program.weights, 1);
    let params = mixsweep_runner::init::upload(&program.weights, &host)?;
    let plan = Arc::new(Plan::new(&cfg, &program));
    let mut state = TrainState::new(params, &plan)?;
    let mut steps = Steps::new(program.clone(), ComputeDtype::Float32, plan)?;
    let tokens: Vec<i32> = (0..64).map(|i| i * 7 % 64).collect();
    let x = mixsweep_mlx::Array::from_i32(&tokens, &[4, 16])?;
    let y = mixsweep_mlx::Array::from_i32(
        &tokens.iter().map(|t| (t + 1) % 64).collect::<Vec<_>>(),
        &[4, 16],
    )?;
    let mut losses = vec![];
    for s in 0..5 {
        let (loss, _, _) = steps.train_step(
            &mut state,
            &x,
            &y,
            &StepScalars {
                lr_scale: 1.0,
                t: s + 1,
                dropout_seed: s,
                qat: false,
            },
        )?;
        losses.push(loss.item_f32()?);
    }
    anyhow::ensure!(
        losses.iter().all(|l| l.is_finite()),
        "non-finite loss in smoke step: {losses:?}"
    );
    println!(
        "  IR program: {} weights, {} ops",
        program.weights.len(),
        program.nodes.len()
    );
    println!(
        "  Training check: loss {:.4} -> {:.4} over 5 compiled steps (finite, OK)",
        losses[0], losses[4]
    );
    println!("=== SMOKE: All checks passed ===");
    Ok(())
}

fn format_flops(f: f64) -> String {
    if f >= 1e12 {
        format!("{:.2} TFLOP", f / 1e12)
    } else if f >= 1e9 {
        format!("{:.2} GFLOP", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2} MFLOP", f / 1e6)
    } else {
        format!("{f:.0} FLOP")
    }
}
