//! `mixsweep-runner train`: loads data ([`inputs`]), initialises, loads or resumes weights and
//! optimizer state ([`resume`]), runs the compiled step with the next step submitted before the
//! last one is read ([`run`]), validates, logs (`metrics.jsonl`, progress lines; [`record`]),
//! averages weights (SWA/EMA; [`averaging`]), stops early on a validation rule, and writes
//! `summary.json` and the final (and averaged) weights.
//!
//! Ctrl-C stops after the current step with status `interrupted`, writing weights, summary and
//! the resume point. A non-finite loss or gradient skips its update; three in a row, or a loss
//! that blows up, end the run as `diverged`.

mod averaging;
mod exports;
mod finish;
mod inputs;
mod record;
mod resume;
mod run;
mod setup;
pub mod startup;
mod stopping;

pub use record::{MetricsRecord, Summary};
pub use resume::RESUME_FILE;

use crate::checkpoint;
use crate::data;
use crate::optim::Plan;
use crate::step::Steps;
use mixsweep_mlx::device;
use mixsweep_model::{ConfigError, ModelConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

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
    /// A step failed after a stop was asked for: a terminal's Ctrl-C also reaches the C++ compiler
    /// MLX runs for CPU kernels, so the step dies with it. Its weights are a failed computation;
    /// the run keeps its last checkpoint's resume point.
    #[error("interrupted while a step ran ({0}); the last checkpoint's resume point is kept")]
    InterruptedMidStep(mixsweep_mlx::Error),
    #[error("{0}")]
    Io(String),
}

impl TrainError {
    pub fn exit_code(&self) -> i32 {
        match self {
            TrainError::Data(data::DataError::Remote { .. }) => 1,
            TrainError::Config(_) | TrainError::Data(_) | TrainError::Checkpoint(_) => 2,
            TrainError::Interrupted | TrainError::InterruptedMidStep(_) => 130,
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
    /// Also export the final weights quantized with this scheme and validate them.
    pub quantize: Option<crate::quantize::Scheme>,
    /// Periodic checkpoints: the folder and the interval in steps.
    pub checkpoints: Option<(PathBuf, usize)>,
    /// Set by a signal handler to stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// What the kernel store sent at process start, for this run's start-up record (the first run
    /// of a process; `None` for later runs of a worker and without a store).
    pub kernels_fetched: Option<crate::kernel_store::Fetched>,
    /// A warm worker's compiled steps: this run takes a matching model's and keeps its own for the
    /// next trials (`None` in a process that runs one trial).
    pub step_cache: Option<std::rc::Rc<crate::step_cache::StepCache>>,
}

/// Loads a config, printing nothing. Config errors name the file.
pub fn load_config(path: &Path) -> Result<ModelConfig, TrainError> {
    Ok(ModelConfig::load(path)?)
}

/// The config with the command line's overrides (`--steps`, `--compute-dtype`).
fn configure(opts: &TrainOptions) -> Result<ModelConfig, TrainError> {
    let mut cfg = load_config(&opts.config)?;
    if let Some(steps) = opts.steps {
        if steps == 0 {
            return Err(ConfigError::new("", "--steps must be > 0").into());
        }
        let t = &mut cfg.training;
        if t.lr_schedule_steps == t.steps {
            t.lr_schedule_steps = steps;
        }
        t.steps = steps;
        t.warmup_steps = t.warmup_steps.min(steps);
    }
    if let Some(d) = opts.compute_dtype {
        cfg.training.compute_dtype = d;
    }
    Ok(cfg)
}

pub fn train(opts: &TrainOptions) -> Result<Summary, TrainError> {
    let started = std::time::Instant::now();
    let mut startup = startup::Startup::new(opts.kernels_fetched);
    let cfg = configure(opts)?;
    startup.mark("config");
    // Data first: bad data is an input error and should fail before any device work.
    let inputs = inputs::Inputs::load(opts, &cfg)?;
    startup.mark("data_open");
    let mut run = run::Run::start(opts, cfg, inputs, started, startup)?;
    let outcome = match run.train_loop() {
        // a step that failed after a stop was asked for failed of the stop (see the variant)
        Err(TrainError::Mlx(e)) if opts.stop.load(std::sync::atomic::Ordering::SeqCst) => {
            Err(TrainError::InterruptedMidStep(e))
        }
        other => other,
    };
    run.finish(outcome)
}

/// What `mixsweep-runner eval` evaluates.
pub struct EvalOptions<'a> {
    pub config: &'a Path,
    pub weights: &'a Path,
    /// Training shards (the validation glob is derived from them unless `val` is given).
    pub train: &'a str,
    pub val: Option<&'a str>,
    pub lut_dir: Option<&'a Path>,
    pub device: Option<device::Device>,
    pub compute_dtype: Option<mixsweep_model::ComputeDtype>,
    /// Evaluate the weights as they are after quantizing with this scheme.
    pub quantize: Option<crate::quantize::Scheme>,
}

/// `mixsweep-runner eval`: loads weights and runs the full validation with bits per byte.
pub fn evaluate_weights(o: &EvalOptions<'_>) -> Result<crate::eval::FullValidation, TrainError> {
    let (config, weights, train, val, lut_dir, device, compute_dtype, quantize) = (
        o.config,
        o.weights,
        o.train,
        o.val,
        o.lut_dir,
        o.device,
        o.compute_dtype,
        o.quantize,
    );
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
    let stream = data::TokenStream::load(data::resolve_files(&val_glob, "val")?, cfg.vocab_size)?;
    data::check_length(&stream, "validation data", cfg.seq_len)?;
    let tables =
        crate::eval::LookupTables::find(lut_dir, &val_glob, &stream.files, cfg.vocab_size)?;
    device::select(device)?;
    let program = Arc::new(cfg.lower());
    let mut host = checkpoint::load(weights, &program.weights)?;
    if let Some(scheme) = &quantize {
        host = crate::quantize::round_trip(&program.weights, &host, scheme);
    }
    let params = crate::init::upload(&program.weights, &host)?;
    let plan = Arc::new(Plan::new(&cfg, &program));
    let char_map = crate::char_features::for_model(&cfg, &stream.files)
        .map_err(|e| ConfigError::new("char_vocab_size", e))?;
    let options = crate::step::StepOptions {
        char_map,
        qat: None,
    };
    let mut steps = Steps::with_options(
        program.clone(),
        cfg.training.compute_dtype,
        plan.clone(),
        options,
    )?;
    // test-time training starts from fresh optimizer state (the file holds none)
    let mut state = crate::step::TrainState::new(params.clone(), &plan)?;
    let ttt = finish::ttt_run(&cfg.training, &mut state, 0);
    Ok(crate::eval::full_validation(
        &mut steps,
        &params,
        &stream,
        cfg.training.batch_tokens,
        cfg.seq_len,
        Some(&tables),
        ttt,
    )?)
}
