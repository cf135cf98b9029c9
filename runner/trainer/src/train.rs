//! The training loop: loads data, initialises or loads weights, runs the compiled step with the
//! next batch prepared ahead, validates, logs (`metrics.jsonl`, progress lines) and writes
//! `summary.json` and the final weights.
//!
//! Pipelining: step `s + 1` is submitted (`async_eval`) before step `s`'s loss is read back, so the
//! device never waits on the host. A non-finite loss stops the run with status `diverged`. Ctrl-C
//! stops after the current step with status `interrupted`, writing weights and summary.

use crate::checkpoint;
use crate::data::{self, DeviceStream, HostBatch, TokenStream};
use crate::init::initial_weights;
use crate::rng::derive;
use crate::step::{OptimizerSpec, StepScalars, Steps, TrainState};
use mixsweep_mlx::{Array, device};
use mixsweep_model::{ConfigError, Counts, ModelConfig};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why a run failed. `exit_code` separates what the user must fix (2) from runtime failures (1).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Data(#[from] data::DataError),
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Mlx(#[from] mixsweep_mlx::Error),
    #[error("{message}")]
    Diverged { message: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Io(String),
}

impl TrainError {
    pub fn exit_code(&self) -> i32 {
        match self {
            TrainError::Data(data::DataError::Remote { .. }) => 1,
            TrainError::Config(_) | TrainError::Data(_) | TrainError::Checkpoint(_) => 2,
            TrainError::Interrupted => 130,
            _ => 1,
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(format!("{what} {}: {e}", path.display()))
}

pub struct TrainOptions {
    pub config: PathBuf,
    pub train: String,
    pub val: Option<String>,
    pub out: Option<PathBuf>,
    pub steps: Option<usize>,
    pub safetensors_load: Option<PathBuf>,
    pub safetensors_out: Option<PathBuf>,
    pub device: Option<device::Device>,
    pub compute_dtype: Option<mixsweep_model::ComputeDtype>,
    pub quiet: bool,
    /// Also print every metrics record as one JSON line on stdout (for log-streaming backends).
    pub progress_json: bool,
    /// After training, validate on every validation token and compute bits per byte.
    pub eval: bool,
    /// Where the BPB lookup tables are (default: beside the validation shards).
    pub lut_dir: Option<PathBuf>,
    /// Continue from `<out>/resume.safetensors` when there is one (written when a run is
    /// interrupted): weights, optimizer state and step, so the run goes on exactly where it stopped.
    pub resume: bool,
    /// Set by a signal handler to stop after the current step.
    pub stop: Arc<AtomicBool>,
}

/// The file an interrupted run leaves in its output folder for `--resume`.
pub use mixsweep_store::RESUME_FILE;

/// Names of the optimizer state in [`RESUME_FILE`]: `param/<w>`, `adam_m/<w>`, `adam_v/<w>`.
fn resume_specs(weights: &[mixsweep_model::ir::WeightSpec]) -> Vec<mixsweep_model::ir::WeightSpec> {
    ["param/", "adam_m/", "adam_v/"]
        .iter()
        .flat_map(|prefix| {
            weights.iter().map(move |w| mixsweep_model::ir::WeightSpec {
                name: format!("{prefix}{}", w.name),
                ..w.clone()
            })
        })
        .collect()
}

/// A run's state at the step it stopped.
struct ResumePoint {
    step: usize,
    params: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    best_val_loss: Option<f64>,
    final_val_loss: Option<f64>,
    final_train_loss: Option<f64>,
    divergence: Option<(f64, f64)>,
}

/// Reads [`RESUME_FILE`], checking it belongs to this config and step count.
fn load_resume(
    path: &Path,
    cfg: &ModelConfig,
    weights: &[mixsweep_model::ir::WeightSpec],
) -> Result<ResumePoint, TrainError> {
    let meta = checkpoint::metadata(path)?;
    let mismatch = |what: &str| {
        ConfigError::new(
            "",
            format!(
                "{}: saved for another {what} than this run's; delete it (or use another --out) to start over",
                path.display()
            ),
        )
    };
    if meta.get("format").map(String::as_str) != Some("mixsweep_resume_v1") {
        return Err(mismatch("format").into());
    }
    if meta.get("config_hash") != Some(&cfg.config_hash) {
        return Err(mismatch("config").into());
    }
    if meta.get("steps_total") != Some(&cfg.training.steps.to_string()) {
        return Err(mismatch("number of steps").into());
    }
    let step: usize = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| mismatch("format"))?;
    let number = |k: &str| meta.get(k).and_then(|v| v.parse::<f64>().ok());
    let mut all = checkpoint::load(path, &resume_specs(weights))?;
    let v = all.split_off(2 * weights.len());
    let m = all.split_off(weights.len());
    Ok(ResumePoint {
        step,
        params: all,
        m,
        v,
        best_val_loss: number("best_val_loss"),
        final_val_loss: number("final_val_loss"),
        final_train_loss: number("final_train_loss"),
        divergence: number("divergence_smoothed").zip(number("divergence_best")),
    })
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsRecord {
    pub step: usize,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub tok_s: f64,
    pub elapsed_s: f64,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    /// `completed`, `diverged`, `interrupted` or `failed`.
    pub status: String,
    pub steps: usize,
    pub steps_completed: usize,
    pub best_val_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub final_train_loss: Option<f64>,
    pub params: usize,
    pub flops_per_token: f64,
    pub mean_tok_s: f64,
    pub wall_time_s: f64,
    pub peak_memory_bytes: usize,
    pub device: String,
    pub mlx_version: String,
    pub compute_dtype: String,
    pub config_hash: String,
    pub tokens: u64,
    /// Full validation (`--eval`): mean loss over every validation token, bits per byte, tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_val_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Problems that did not stop the run but make its numbers weaker (e.g. no validation set:
    /// `best_val_loss` is then missing and the trial cannot be ranked by it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let tmp = path.with_extension("json.partial");
    let text = serde_json::to_string_pretty(value).expect("summary serializes");
    std::fs::write(&tmp, text + "\n").map_err(|e| io_err("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("cannot rename", path, e))
}

fn to_arrays(batch: &HostBatch, rows: usize, seq_len: usize) -> Result<(Array, Array), TrainError> {
    Ok((
        Array::from_i32(&batch.tokens, &[rows, seq_len])?,
        Array::from_i32(&batch.targets, &[rows, seq_len])?,
    ))
}

fn format_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Loads a config, printing nothing. Config errors name the file.
pub fn load_config(path: &Path) -> Result<ModelConfig, TrainError> {
    Ok(ModelConfig::load(path)?)
}

/// Whether step `s` (0-based) of `total` prints a progress line.
fn is_log_step(s: usize, total: usize, every: usize) -> bool {
    s == 0 || s + 1 == total || s.is_multiple_of(every) || (s < every && s.is_power_of_two())
}

pub fn train(opts: &TrainOptions) -> Result<Summary, TrainError> {
    let started = Instant::now();
    let mut cfg = load_config(&opts.config)?;
    if let Some(steps) = opts.steps {
        if steps == 0 {
            return Err(ConfigError::new("", "--steps must be > 0").into());
        }
        if cfg.training.lr_schedule_steps == cfg.training.steps {
            cfg.training.lr_schedule_steps = steps;
        }
        cfg.training.steps = steps;
        cfg.training.warmup_steps = cfg.training.warmup_steps.min(steps);
    }
    if let Some(d) = opts.compute_dtype {
        cfg.training.compute_dtype = d;
    }
    let t = cfg.training.clone();
    let (seq_len, rows) = (cfg.seq_len, t.batch_size(cfg.seq_len));

    // Data first: bad data is an input error and should fail before any device work.
    let train_files = data::resolve_files(&opts.train, "train")?;
    let train_stream = TokenStream::load(train_files, cfg.vocab_size)?;
    let char_map_host = crate::char_features::for_model(&cfg, &train_stream.files)
        .map_err(|e| ConfigError::new("char_vocab_size", e))?;
    data::check_length(&train_stream, "training data", seq_len)?;
    let mut warnings: Vec<String> = vec![];
    let val_stream = match &opts.val {
        Some(glob) => Some(TokenStream::load(
            data::resolve_files(glob, "val")?,
            cfg.vocab_size,
        )?),
        None => match data::derive_val_glob(&opts.train) {
            Some(g) => match data::resolve_files(&g, "val") {
                Ok(files) => Some(TokenStream::load(files, cfg.vocab_size)?),
                Err(e @ data::DataError::Remote { .. }) => return Err(e.into()),
                Err(_) => {
                    warnings.push(format!(
                        "no validation set: {g:?} matches nothing (pass --val GLOB); val_loss is not measured"
                    ));
                    None
                }
            },
            None => {
                warnings.push(
                    "no validation set: the train glob has no `train` to replace with `val` (pass --val GLOB); \
                     val_loss is not measured"
                        .to_string(),
                );
                None
            }
        },
    };
    for w in &warnings {
        eprintln!("  [{}] WARNING: {w}", cfg.name);
    }
    if let Some(v) = &val_stream {
        data::check_length(v, "validation data", seq_len)?;
    }
    // --eval needs the validation set and its lookup tables: check both before any training.
    let lookup = match (&val_stream, opts.eval) {
        (_, false) => None,
        (None, true) => {
            return Err(ConfigError::new(
                "",
                "--eval needs validation shards (none found; pass --val GLOB)",
            )
            .into());
        }
        (Some(v), true) => {
            // A validation set exists, so its glob was given or derived.
            let val_glob = opts
                .val
                .clone()
                .or_else(|| data::derive_val_glob(&opts.train))
                .unwrap_or_default();
            Some(crate::eval::LookupTables::find(
                opts.lut_dir.as_deref(),
                &val_glob,
                &v.files,
                cfg.vocab_size,
            )?)
        }
    };

    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
    std::fs::create_dir_all(&out_dir).map_err(|e| io_err("cannot create", &out_dir, e))?;
    let weights_out = opts
        .safetensors_out
        .clone()
        .unwrap_or_else(|| out_dir.join("model.safetensors"));

    let device = device::select(opts.device)?;
    let mlx_version = mixsweep_mlx::version()?;
    let program = Arc::new(cfg.lower());
    let counts = Counts::of(&cfg, &program);
    if !opts.quiet {
        println!(
            "loaded config {:?}: model_dim={} vocab_size={} seq_len={} blocks={}",
            cfg.name,
            cfg.model_dim,
            cfg.vocab_size,
            seq_len,
            cfg.blocks.len()
        );
        println!(
            "  training: steps={} lr={} grad_clip={} weight_decay={} seed={} batch_tokens={} compute_dtype={}",
            t.steps,
            t.lr,
            t.grad_clip,
            t.matrix.weight_decay,
            t.seed,
            t.batch_tokens,
            t.compute_dtype.as_str()
        );
        println!(
            "  [{}] IR program: {} ops, {} weights, {} params, {:.2} MFLOP/token; device={device} mlx={mlx_version}",
            cfg.name,
            counts.ir_ops,
            counts.weights,
            counts.params,
            counts.train_flops_per_token / 1e6
        );
    }

    let resume_path = out_dir.join(RESUME_FILE);
    let resumed = if opts.resume && resume_path.is_file() {
        let r = load_resume(&resume_path, &cfg, &program.weights)?;
        // on stderr even with --quiet: the logs should say that this run continues another
        eprintln!(
            "  [{}] resuming at step {}/{} from {}",
            cfg.name,
            r.step,
            t.steps,
            resume_path.display()
        );
        Some(r)
    } else {
        None
    };
    let start = resumed.as_ref().map_or(0, |r| r.step).min(t.steps);
    let host_weights = match (&resumed, &opts.safetensors_load) {
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
        (None, None) => initial_weights(&program.weights, t.seed),
    };
    let params = crate::init::upload(&program.weights, &host_weights)?;
    let mut state = TrainState::new(params)?;
    if let Some(r) = &resumed {
        state.m = crate::init::upload(&program.weights, &r.m)?;
        state.v = crate::init::upload(&program.weights, &r.v)?;
    }
    let spec = OptimizerSpec::new(&cfg, &program);
    let mut steps = Steps::with_char_map(program.clone(), t.compute_dtype, spec, char_map_host)?;
    mixsweep_mlx::memory::reset_peak()?;

    let val_batches: Vec<(Array, Array)> = match &val_stream {
        Some(v) => data::validation_batches(v, t.val_batches, rows, seq_len)
            .iter()
            .map(|b| to_arrays(b, rows, seq_len))
            .collect::<Result<_, _>>()?,
        None => vec![],
    };

    let metrics_path = out_dir.join("metrics.jsonl");
    // A resumed run adds to the metrics of the run it continues.
    let mut metrics = if resumed.is_some() {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
    } else {
        std::fs::File::create(&metrics_path)
    }
    .map_err(|e| io_err("cannot create", &metrics_path, e))?;
    let mut summary = Summary {
        name: cfg.name.clone(),
        status: "running".into(),
        steps: t.steps,
        steps_completed: start,
        best_val_loss: resumed.as_ref().and_then(|r| r.best_val_loss),
        final_val_loss: resumed.as_ref().and_then(|r| r.final_val_loss),
        final_train_loss: resumed.as_ref().and_then(|r| r.final_train_loss),
        params: counts.params,
        flops_per_token: counts.train_flops_per_token,
        mean_tok_s: 0.0,
        wall_time_s: 0.0,
        peak_memory_bytes: 0,
        device: device.to_string(),
        mlx_version,
        compute_dtype: t.compute_dtype.as_str().into(),
        config_hash: cfg.config_hash.clone(),
        tokens: start as u64 * (rows * seq_len) as u64,
        full_val_loss: None,
        val_bpb: None,
        full_val_tokens: None,
        error: None,
        warnings,
    };

    let evaluate = |steps: &mut Steps, params: &[Array]| -> Result<Option<f64>, TrainError> {
        if val_batches.is_empty() {
            return Ok(None);
        }
        let mut total = 0f64;
        for (x, y) in &val_batches {
            total += steps.eval_loss(params, x, y)?.item_f32()? as f64;
        }
        Ok(Some(total / val_batches.len() as f64))
    };

    // The training tokens live on the device; each step uploads only its row offsets.
    let device_stream = DeviceStream::upload(&train_stream, seq_len)?;
    let tokens_per_step = (rows * seq_len) as u64;
    let mut first_done: Option<Instant> = None;
    let mut pending: Option<(usize, Array, Array, Option<f64>)> = None;
    let mut divergence = crate::divergence::Divergence::resume(
        t.divergence_factor,
        resumed.as_ref().and_then(|r| r.divergence),
    );
    let mut outcome: Result<(), TrainError> = Ok(());
    // MIXSWEEP_TIMING=1: host time spent submitting steps vs waiting for the device.
    let timing = std::env::var("MIXSWEEP_TIMING").is_ok_and(|v| v == "1");
    let (mut submit_s, mut wait_s) = (0f64, 0f64);
    // MIXSWEEP_SYNC=1: evaluate each step before submitting the next (no pipelining).
    let sync_steps = std::env::var("MIXSWEEP_SYNC").is_ok_and(|v| v == "1");

    // Reads a finished step's loss and logs it.
    let mut finish_step = |s: usize,
                           loss: &Array,
                           norm: &Array,
                           val: Option<f64>,
                           first_done: &mut Option<Instant>,
                           summary: &mut Summary|
     -> Result<(), TrainError> {
        let loss_v = loss.item_f32()? as f64;
        summary.steps_completed = s + 1;
        summary.tokens = (s as u64 + 1) * tokens_per_step;
        summary.final_train_loss = Some(loss_v);
        if first_done.is_none() {
            *first_done = Some(Instant::now());
        }
        divergence
            .observe(s, loss_v)
            .map_err(|message| TrainError::Diverged { message })?;
        if is_log_step(s, t.steps, t.log_every) || val.is_some() {
            let steady = first_done.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
            let tok_s = if s > start && steady > 0.0 {
                ((s - start) as u64 * tokens_per_step) as f64 / steady
            } else {
                0.0
            };
            let lr = t.lr * t.lr_scale(s);
            let grad_norm = norm.item_f32()? as f64;
            let elapsed = started.elapsed().as_secs_f64();
            let record = MetricsRecord {
                step: s,
                train_loss: loss_v,
                val_loss: val,
                lr,
                grad_norm,
                tokens: summary.tokens,
                tok_s,
                elapsed_s: elapsed,
            };
            let line = serde_json::to_string(&record).expect("record serializes");
            writeln!(metrics, "{line}")
                .and_then(|_| metrics.flush())
                .map_err(|e| io_err("cannot write", &metrics_path, e))?;
            if opts.progress_json {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}").and_then(|_| out.flush());
            }
            if !opts.quiet {
                let val_s = val.map(|v| format!(" val={v:.4}")).unwrap_or_default();
                let eta = if s > start {
                    format!(
                        ", ~{} remaining",
                        format_duration(steady / (s - start) as f64 * (t.steps - s - 1) as f64)
                    )
                } else {
                    String::new()
                };
                println!(
                    "  [{}] step {s}/{} loss={loss_v:.4}{val_s} lr={lr:.6} tok/s={tok_s:.0} ({elapsed:.1}s{eta})",
                    cfg.name, t.steps
                );
            }
        }
        Ok(())
    };

    for s in start..t.steps {
        if opts.stop.load(Ordering::SeqCst) {
            outcome = Err(TrainError::Interrupted);
            break;
        }
        // Validation on the weights after `s` updates, at mixlab's cadence.
        let val = if t.val_every > 0 && s % t.val_every == 0 {
            evaluate(&mut steps, &state.params)?
        } else {
            None
        };
        if let Some(v) = val {
            summary.best_val_loss = Some(summary.best_val_loss.map_or(v, |b: f64| b.min(v)));
            summary.final_val_loss = Some(v);
        }
        let offsets = data::train_offsets(t.seed, s, train_stream.len(), rows, seq_len);
        let (x, y) = device_stream.batch(&offsets)?;
        let scalars = StepScalars {
            lr_scale: t.lr_scale(s) as f32,
            t: s as u64 + 1,
            dropout_seed: derive(t.seed, 1 << 40 | s as u64),
        };
        let submit = Instant::now();
        let (loss, norm) = steps.train_step(&mut state, &x, &y, &scalars)?;
        let mut to_eval: Vec<&Array> = vec![&loss, &norm];
        to_eval.extend(state.arrays());
        if sync_steps {
            mixsweep_mlx::eval(&to_eval)?;
        } else {
            mixsweep_mlx::async_eval(&to_eval)?;
        }
        let wait = Instant::now();
        if s > 0 {
            submit_s += (wait - submit).as_secs_f64();
        }
        if let Some((ps, pl, pn, pv)) = pending.take()
            && let Err(e) = finish_step(ps, &pl, &pn, pv, &mut first_done, &mut summary)
        {
            outcome = Err(e);
            break;
        }
        if s > 0 {
            wait_s += wait.elapsed().as_secs_f64();
        }
        pending = Some((s, loss, norm, val));
    }
    // The last submitted step has updated the weights: record it, also when interrupted (so the
    // saved weights and `steps_completed` agree).
    if let Some((ps, pl, pn, pv)) = pending.take()
        && matches!(outcome, Ok(()) | Err(TrainError::Interrupted))
        && let Err(e) = finish_step(ps, &pl, &pn, pv, &mut first_done, &mut summary)
    {
        outcome = Err(e);
    }
    let steady = first_done.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    if outcome.is_ok() && summary.steps_completed == t.steps {
        let val = evaluate(&mut steps, &state.params)?;
        if let Some(v) = val {
            summary.best_val_loss = Some(summary.best_val_loss.map_or(v, |b: f64| b.min(v)));
            summary.final_val_loss = Some(v);
            let line = serde_json::json!({"step": t.steps, "val_loss": v, "tokens": summary.tokens,
                "elapsed_s": started.elapsed().as_secs_f64()});
            writeln!(metrics, "{line}").map_err(|e| io_err("cannot write", &metrics_path, e))?;
            if opts.progress_json {
                println!("{line}");
            }
            if !opts.quiet {
                println!("  [{}] completed_steps={} val={v:.4}", cfg.name, t.steps);
            }
        }
        if let (Some(tables), Some(v)) = (&lookup, &val_stream) {
            let full = crate::eval::full_validation(
                &mut steps,
                &state.params,
                v,
                t.batch_tokens,
                seq_len,
                Some(tables),
            )?;
            summary.full_val_loss = Some(full.val_loss);
            summary.val_bpb = full.val_bpb;
            summary.full_val_tokens = Some(full.tokens);
            if !opts.quiet {
                println!(
                    "  [{}] full validation: loss={:.4} over {} tokens, {:.4} bits/byte",
                    cfg.name,
                    full.val_loss,
                    full.tokens,
                    full.val_bpb.unwrap_or(f64::NAN)
                );
            }
        }
    }

    summary.mean_tok_s = if summary.steps_completed > start + 1 && steady > 0.0 {
        ((summary.steps_completed - start - 1) as u64 * tokens_per_step) as f64 / steady
    } else {
        0.0
    };
    summary.wall_time_s = started.elapsed().as_secs_f64();
    if timing && summary.steps_completed > 1 {
        let n = (summary.steps_completed - 1) as f64;
        eprintln!(
            "  [{}] [timing] per step: submit={:.2}ms wait={:.2}ms traces={}",
            cfg.name,
            submit_s / n * 1e3,
            wait_s / n * 1e3,
            steps.traces.load(Ordering::Relaxed)
        );
    }
    summary.peak_memory_bytes = mixsweep_mlx::memory::stats().map(|s| s.peak).unwrap_or(0);
    summary.status = match &outcome {
        Ok(()) => "completed",
        Err(TrainError::Diverged { .. }) => "diverged",
        Err(TrainError::Interrupted) => "interrupted",
        Err(_) => "failed",
    }
    .into();
    if let Err(e) = &outcome {
        summary.error = Some(e.to_string());
    }

    // Keep the weights of every run that got anywhere (a diverged run's are not finite: skip them).
    if !matches!(outcome, Err(TrainError::Diverged { .. })) && summary.steps_completed > 0 {
        let host: Vec<Vec<f32>> = state
            .params
            .iter()
            .map(|p| p.to_vec_f32())
            .collect::<Result<_, _>>()?;
        let mut meta = HashMap::new();
        meta.insert("name".to_string(), cfg.name.clone());
        meta.insert("config_hash".to_string(), cfg.config_hash.clone());
        meta.insert("steps".to_string(), summary.steps_completed.to_string());
        meta.insert("format".to_string(), "mixsweep_v1".to_string());
        checkpoint::save(&weights_out, &program.weights, &host, meta)?;
        if !opts.quiet {
            println!(
                "exported safetensors to {} ({} tensors)",
                weights_out.display(),
                host.len()
            );
        }
        // An interrupted run also keeps its optimizer state and step, for `--resume`.
        if matches!(outcome, Err(TrainError::Interrupted)) && summary.steps_completed > start {
            let mut all = host;
            for a in state.m.iter().chain(&state.v) {
                all.push(a.to_vec_f32()?);
            }
            let mut meta = HashMap::new();
            meta.insert("format".to_string(), "mixsweep_resume_v1".to_string());
            meta.insert("config_hash".to_string(), cfg.config_hash.clone());
            meta.insert("steps_total".to_string(), t.steps.to_string());
            meta.insert("step".to_string(), summary.steps_completed.to_string());
            let (smoothed, best) = divergence.saved().unzip();
            for (k, v) in [
                ("best_val_loss", summary.best_val_loss),
                ("final_val_loss", summary.final_val_loss),
                ("final_train_loss", summary.final_train_loss),
                ("divergence_smoothed", smoothed),
                ("divergence_best", best),
            ] {
                if let Some(v) = v {
                    meta.insert(k.to_string(), v.to_string());
                }
            }
            checkpoint::save(&resume_path, &resume_specs(&program.weights), &all, meta)?;
        }
    }
    // A finished run needs no resume point any more (a stale one would be uploaded and resumed).
    if outcome.is_ok() && resume_path.is_file() {
        std::fs::remove_file(&resume_path).map_err(|e| io_err("cannot remove", &resume_path, e))?;
    }
    write_json_atomic(&out_dir.join("summary.json"), &summary)?;
    if !opts.quiet {
        println!(
            "  [{}] {}: steps={}/{} final_train={} best_val={} tok/s={:.0} wall={}",
            cfg.name,
            summary.status,
            summary.steps_completed,
            t.steps,
            summary
                .final_train_loss
                .map_or("n/a".into(), |v| format!("{v:.4}")),
            summary
                .best_val_loss
                .map_or("n/a".into(), |v| format!("{v:.4}")),
            summary.mean_tok_s,
            format_duration(summary.wall_time_s)
        );
    }
    outcome.map(|_| summary)
}

/// `mixsweep-runner eval`: loads weights and runs the full validation with bits per byte.
pub fn evaluate_weights(
    config: &Path,
    weights: &Path,
    train: &str,
    val: Option<&str>,
    lut_dir: Option<&Path>,
    device: Option<device::Device>,
    compute_dtype: Option<mixsweep_model::ComputeDtype>,
) -> Result<crate::eval::FullValidation, TrainError> {
    let mut cfg = load_config(config)?;
    if let Some(d) = compute_dtype {
        cfg.training.compute_dtype = d;
    }
    let val_glob = match val {
        Some(v) => v.to_string(),
        None => data::derive_val_glob(train).ok_or_else(|| {
            ConfigError::new(
                "",
                "the train glob has no `train` to replace with `val`: pass --val GLOB",
            )
        })?,
    };
    let stream = TokenStream::load(data::resolve_files(&val_glob, "val")?, cfg.vocab_size)?;
    data::check_length(&stream, "validation data", cfg.seq_len)?;
    let tables =
        crate::eval::LookupTables::find(lut_dir, &val_glob, &stream.files, cfg.vocab_size)?;
    device::select(device)?;
    let program = Arc::new(cfg.lower());
    let host = checkpoint::load(weights, &program.weights)?;
    let params = crate::init::upload(&program.weights, &host)?;
    let spec = OptimizerSpec::new(&cfg, &program);
    let char_map = crate::char_features::for_model(&cfg, &stream.files)
        .map_err(|e| ConfigError::new("char_vocab_size", e))?;
    let mut steps =
        Steps::with_char_map(program.clone(), cfg.training.compute_dtype, spec, char_map)?;
    Ok(crate::eval::full_validation(
        &mut steps,
        &params,
        &stream,
        cfg.training.batch_tokens,
        cfg.seq_len,
        Some(&tables),
    )?)
}
