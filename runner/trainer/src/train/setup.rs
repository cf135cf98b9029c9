//! Setting up a run: the summary it starts from, the header it prints, the resume point it may
//! continue, and its initial weights and optimizer state.

use super::record::Summary;
use super::resume::{self, ResumePoint};
use super::{TrainError, TrainOptions};
use crate::checkpoint;
use crate::optim::Plan;
use crate::step::TrainState;
use mixsweep_model::ir::Program;
use mixsweep_model::{Counts, ModelConfig};

pub(super) fn new_summary(
    cfg: &ModelConfig,
    counts: &Counts,
    plan: &Plan,
    device: String,
    warnings: Vec<String>,
) -> Result<Summary, TrainError> {
    Ok(Summary {
        name: cfg.name.clone(),
        status: mixsweep_artifacts::RunStatus::Running,
        steps: cfg.training.steps,
        steps_completed: 0,
        best_val_loss: None,
        final_val_loss: None,
        final_train_loss: None,
        params: counts.params,
        flops_per_token: counts.train_flops_per_token,
        inference_state_values: counts.inference_state_values,
        mean_tok_s: 0.0,
        tok_s_steps: 0,
        time_to_first_step_s: None,
        kernels_fetched: None,
        startup: Vec::new(),
        mfu: None,
        wall_time_s: 0.0,
        peak_memory_bytes: 0,
        device,
        mlx_version: mixsweep_mlx::version()?,
        runner_version: env!("CARGO_PKG_VERSION").to_string(),
        compute_dtype: cfg.training.compute_dtype.as_str().into(),
        optimizer: plan.describe().to_string(),
        config_hash: cfg.config_hash.clone(),
        tokens: 0,
        stop_reason: None,
        skipped_steps: 0,
        swa_val_loss: None,
        ttt: cfg
            .training
            .ttt
            .map(|t| format!("score-first steps={} lr={}", t.steps, t.lr)),
        full_val_loss: None,
        val_bpb: None,
        full_val_tokens: None,
        swa_full_val_loss: None,
        swa_val_bpb: None,
        quantize: None,
        quant_val_loss: None,
        error: None,
        warnings,
    })
}

pub(super) fn print_header(cfg: &ModelConfig, counts: &Counts, plan: &Plan, summary: &Summary) {
    let t = &cfg.training;
    println!(
        "loaded config {:?}: model_dim={} vocab_size={} seq_len={} blocks={}",
        cfg.name,
        cfg.model_dim,
        cfg.vocab_size,
        cfg.seq_len,
        cfg.blocks.len()
    );
    let default = if t.optimizer.explicit {
        ""
    } else {
        " [mixlab's default; set training.optimizer to change it]"
    };
    println!(
        "  training: steps={} lr={} grad_clip={} weight_decay={} seed={} batch_tokens={} compute_dtype={}",
        t.steps,
        t.lr,
        t.grad_clip,
        t.matrix.weight_decay,
        t.seed,
        t.batch_tokens,
        summary.compute_dtype
    );
    println!("  optimizer: {}{default}", plan.describe());
    if let Some(q) = t.qat {
        println!(
            "  quantization-aware training: int{} from step {}",
            q.bits, q.start
        );
    }
    println!(
        "  [{}] IR program: {} ops, {} weights, {} params, {:.2} MFLOP/token; device={} mlx={}",
        cfg.name,
        counts.ir_ops,
        counts.weights,
        counts.params,
        counts.train_flops_per_token / 1e6,
        summary.device,
        summary.mlx_version
    );
}

pub(super) fn load_resume(
    opts: &TrainOptions,
    cfg: &ModelConfig,
    program: &Program,
    plan: &Plan,
    out_dir: &std::path::Path,
) -> Result<Option<ResumePoint>, TrainError> {
    let path = out_dir.join(resume::RESUME_FILE);
    if !(opts.resume && path.is_file()) {
        return Ok(None);
    }
    let r = resume::load(&path, cfg, &program.weights, plan)?;
    // on stderr even with --quiet: the logs should say that this run continues another
    eprintln!(
        "  [{}] resuming at step {}/{} from {}",
        cfg.name,
        r.step,
        cfg.training.steps,
        path.display()
    );
    Ok(Some(r))
}

pub(super) fn initial_state(
    opts: &TrainOptions,
    cfg: &ModelConfig,
    program: &Program,
    plan: &Plan,
    resumed: Option<&ResumePoint>,
) -> Result<TrainState, TrainError> {
    let host = match (resumed, &opts.safetensors_load) {
        (Some(r), _) => r.params.clone(),
        (None, Some(p)) => {
            let w = checkpoint::load(p, &program.weights)?;
            if !opts.quiet {
                println!(
                    "  [{}] loaded {} weights from {}",
                    cfg.name,
                    w.len(),
                    p.display()
                );
            }
            w
        }
        (None, None) => crate::init::initial_weights(&program.weights, cfg.training.seed),
    };
    let params = crate::init::upload(&program.weights, &host)?;
    let mut state = TrainState::new(params, plan)?;
    if let Some(r) = resumed {
        let specs = plan.state_specs(&program.weights);
        let flat = crate::init::upload(&specs, &r.state)?;
        state.set_state(flat, &plan.slot_counts());
    }
    Ok(state)
}
