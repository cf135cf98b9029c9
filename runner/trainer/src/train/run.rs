//! One training run from its first step to its files: [`Run::start`] sets up device, program,
//! optimizer plan and state (fresh, loaded or resumed); [`Run::train_loop`] runs the steps;
//! [`Run::finish`] validates, exports and writes the summary.
//!
//! Pipelining: step `s + 1` is submitted (`async_eval`) before step `s`'s loss is read back, so the
//! device never waits on the host.

use super::averaging::Averager;
use super::inputs::Inputs;
use super::record::{Metrics, MetricsRecord, Summary, format_duration, is_log_step};
use super::resume::Meta;
use super::setup::{initial_state, load_resume, new_summary, print_header};
use super::startup::Startup;
use super::stopping::Stopper;
use super::{TrainError, TrainOptions, io_err};
use crate::data::{self, DeviceStream, HostBatch, TokenStream};
use crate::divergence::Divergence;
use crate::eval::LookupTables;
use crate::optim::Plan;
use crate::rng::derive;
use crate::step::{StepKey, StepScalars, Steps, TrainState};
use mixsweep_mlx::{Array, device};
use mixsweep_model::ir::Program;
use mixsweep_model::{Counts, ModelConfig, TrainingConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A submitted step whose loss has not been read yet.
struct Pending {
    step: usize,
    loss: Array,
    norm: Array,
    aux: Vec<Array>,
    val: Option<f64>,
}

pub struct Run<'a> {
    pub(super) opts: &'a TrainOptions,
    pub(super) cfg: ModelConfig,
    pub(super) t: TrainingConfig,
    pub(super) program: Arc<Program>,
    pub(super) plan: Arc<Plan>,
    pub(super) steps: Steps,
    pub(super) state: TrainState,
    pub(super) train_len: usize,
    pub(super) device_stream: DeviceStream,
    pub(super) val_stream: Option<TokenStream>,
    pub(super) val_batches: Vec<(Array, Array)>,
    pub(super) lookup: Option<LookupTables>,
    pub(super) out_dir: PathBuf,
    pub(super) weights_out: PathBuf,
    pub(super) metrics: Metrics,
    pub(super) summary: Summary,
    pub(super) divergence: Divergence,
    pub(super) stopper: Stopper,
    pub(super) averager: Option<Averager>,
    pub(super) start: usize,
    pub(super) started: Instant,
    pub(super) first_done: Option<Instant>,
    /// Steps submitted when the first step's loss was read (the pipeline's fill).
    pub(super) submitted_at_first: usize,
    /// Steps submitted so far (an absolute count, like `start`).
    pub(super) submitted: usize,
    pub(super) rows: usize,
    pub(super) startup: Startup,
}

fn to_arrays(batch: &HostBatch, rows: usize, seq_len: usize) -> Result<(Array, Array), TrainError> {
    Ok((
        Array::from_i32(&batch.tokens, &[rows, seq_len])?,
        Array::from_i32(&batch.targets, &[rows, seq_len])?,
    ))
}

impl<'a> Run<'a> {
    pub fn start(
        opts: &'a TrainOptions,
        cfg: ModelConfig,
        inputs: Inputs,
        started: Instant,
        mut startup: Startup,
    ) -> Result<Run<'a>, TrainError> {
        let t = cfg.training.clone();
        let (seq_len, rows) = (cfg.seq_len, t.batch_size(cfg.seq_len));
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
        startup.mark("device");
        let program = Arc::new(cfg.lower());
        let plan = Arc::new(Plan::new(&cfg, &program));
        let counts = Counts::of(&cfg, &program);
        startup.mark("program");
        let summary = new_summary(&cfg, &counts, &plan, device.to_string(), inputs.warnings)?;
        if !opts.quiet {
            print_header(&cfg, &counts, &plan, &summary);
        }
        let resumed = load_resume(opts, &cfg, &program, &plan, &out_dir)?;
        let start = resumed.as_ref().map_or(0, |r| r.step).min(t.steps);
        let state = initial_state(opts, &cfg, &program, &plan, resumed.as_ref())?;
        startup.mark("weights");
        let qat = t.qat.map(|q| {
            let bits = if q.bits == 6 {
                crate::quantize::Bits::Int6
            } else {
                crate::quantize::Bits::Int8
            };
            crate::qat::Qat::new(bits, &program.weights)
        });
        let options = crate::step::StepOptions {
            char_map: inputs.char_map,
            qat,
        };
        let kept = StepKey::of(&program, t.compute_dtype, &plan, &options)
            .zip(opts.step_cache.as_ref())
            .and_then(|(key, cache)| cache.take(&key, &plan));
        let reused = kept.is_some();
        let steps = match kept {
            Some(steps) => steps,
            None => Steps::with_options(program.clone(), t.compute_dtype, plan.clone(), options)?,
        };
        mixsweep_mlx::memory::reset_peak()?;
        // a worker's later trial of the same model skips tracing and compiling its step
        startup.mark(if reused { "step_reused" } else { "step_setup" });
        let val_batches = match &inputs.val {
            Some(v) => data::validation_batches(v, t.val_batches, rows, seq_len)
                .iter()
                .map(|b| to_arrays(b, rows, seq_len))
                .collect::<Result<_, _>>()?,
            None => vec![],
        };
        let metrics = Metrics::open(
            out_dir.join("metrics.jsonl"),
            resumed.is_some(),
            opts.progress_json,
        )?;
        let empty = Meta::new();
        let meta = resumed.as_ref().map_or(&empty, |r| &r.meta);
        let averager = match (t.averaging, &resumed) {
            (None, _) => None,
            (Some(a), Some(r)) => Some(Averager::resume(a, r, &program.weights)?),
            (Some(a), None) => Some(Averager::new(a)),
        };
        let mut run = Run {
            opts,
            divergence: Divergence::resume(t.divergence_factor, meta),
            stopper: match &resumed {
                Some(r) => Stopper::resume(t.early_stop.clone(), r),
                None => Stopper::new(t.early_stop.clone()),
            },
            averager,
            // The training tokens live on the device; each step uploads only its row offsets.
            device_stream: DeviceStream::upload(&inputs.train, seq_len)?,
            submitted_at_first: 0,
            submitted: 0,
            train_len: inputs.train.len(),
            val_stream: inputs.val,
            lookup: inputs.lookup,
            cfg,
            program,
            plan,
            steps,
            state,
            val_batches,
            out_dir,
            weights_out,
            metrics,
            summary,
            start,
            started,
            first_done: None,
            rows,
            startup,
            t,
        };
        run.startup.mark("data_upload");
        if let Some(r) = &resumed {
            run.summary.steps_completed = start;
            run.summary.tokens = start as u64 * run.tokens_per_step();
            run.summary.best_val_loss = r.number("best_val_loss");
            run.summary.final_val_loss = r.number("final_val_loss");
            run.summary.final_train_loss = r.number("final_train_loss");
            run.summary.skipped_steps = run.divergence.skipped();
        }
        Ok(run)
    }

    /// Model FLOP utilisation at `tok_s` (with `training.hardware_tflops`).
    pub(super) fn mfu(&self, tok_s: f64) -> Option<f64> {
        self.t
            .hardware_tflops
            .map(|peak| tok_s * self.summary.flops_per_token / (peak * 1e12))
    }

    pub(super) fn tokens_per_step(&self) -> u64 {
        (self.rows * self.cfg.seq_len) as u64
    }

    /// Mean loss over the fixed validation batches (`None` without a validation set) with the
    /// eval step as compiled so far: see [`Run::validate_with`].
    pub(super) fn validate(&mut self, params: &[Array]) -> Result<Option<f64>, TrainError> {
        let compiled = self.steps.eval_compiled();
        self.validate_with(params, compiled)
    }

    /// [`Run::validate`], compiling the eval step first if `compiled` (worth it for the periodic
    /// validations during training; the one before the first step and the final ones of a run
    /// that never compiled it run op by op, so a short run pays no eval compile).
    pub(super) fn validate_with(
        &mut self,
        params: &[Array],
        compiled: bool,
    ) -> Result<Option<f64>, TrainError> {
        if self.val_batches.is_empty() {
            return Ok(None);
        }
        let mut total = 0f64;
        for (x, y) in &self.val_batches {
            total += self.steps.eval_loss(params, x, y, compiled)?.item_f32()? as f64;
        }
        Ok(Some(total / self.val_batches.len() as f64))
    }

    /// Runs steps `start..steps`; `Ok` also when a validation rule stopped the run early.
    pub fn train_loop(&mut self) -> Result<(), TrainError> {
        let sync_steps = std::env::var("MIXSWEEP_SYNC").is_ok_and(|v| v == "1");
        let mut pending: Option<Pending> = None;
        let mut outcome = Ok(());
        for s in self.start..self.t.steps {
            if self.opts.stop.load(Ordering::SeqCst) {
                outcome = Err(TrainError::Interrupted);
                break;
            }
            // Validation on the weights after `s` updates, at mixlab's cadence.
            let val = if self.t.val_every > 0 && s % self.t.val_every == 0 {
                let params = self.state.params.clone();
                let compiled = s != self.start || !eager_first_validation();
                let v = self.validate_with(&params, compiled)?;
                if s == self.start {
                    self.startup.mark("first_validation");
                }
                v
            } else {
                None
            };
            if let Some(v) = val {
                self.summary.validated(v);
                if let Some(reason) = self.stopper.observe(s, v) {
                    // these are the weights after step s - 1: finish it and stop
                    if let Some(p) = pending.take() {
                        outcome = self.finish_step(p);
                    }
                    self.summary.stop_reason = Some(reason);
                    break;
                }
            }
            let offsets =
                data::train_offsets(self.t.seed, s, self.train_len, self.rows, self.cfg.seq_len);
            let (x, y) = self.device_stream.batch(&offsets)?;
            let scalars = StepScalars {
                lr_scale: self.t.lr_scale(s) as f32,
                t: s as u64 + 1,
                dropout_seed: derive(self.t.seed, 1 << 40 | s as u64),
                qat: self.t.qat.is_some_and(|q| s >= q.start),
            };
            let (loss, norm, aux) = self.steps.train_step(&mut self.state, &x, &y, &scalars)?;
            if let Some(a) = &mut self.averager {
                a.observe(s, &self.state.params)?;
            }
            let mut to_eval: Vec<&Array> = vec![&loss, &norm];
            to_eval.extend(&aux);
            to_eval.extend(self.state.arrays());
            if let Some(w) = self.averager.as_ref().and_then(|a| a.weights()) {
                to_eval.extend(w);
            }
            if sync_steps {
                mixsweep_mlx::eval(&to_eval)?;
            } else {
                mixsweep_mlx::async_eval(&to_eval)?;
            }
            self.submitted = s + 1;
            if s == self.start {
                self.startup.mark("first_step_submit");
            }
            if let Some(p) = pending.take()
                && let Err(e) = self.finish_step(p)
            {
                outcome = Err(e);
                break;
            }
            pending = Some(Pending {
                step: s,
                loss,
                norm,
                aux,
                val,
            });
            if self.checkpoint_due(s) {
                // finish this step first, so that the checkpoint and the summary agree
                if let Some(p) = pending.take()
                    && let Err(e) = self.finish_step(p)
                {
                    outcome = Err(e);
                    break;
                }
                self.checkpoint()?;
            }
        }
        // The last submitted step has updated the weights: record it, also when interrupted (so
        // the saved weights and `steps_completed` agree).
        if let Some(p) = pending.take()
            && matches!(outcome, Ok(()) | Err(TrainError::Interrupted))
            && let Err(e) = self.finish_step(p)
        {
            outcome = Err(e);
        }
        outcome
    }

    /// Reads a finished step's loss, checks it, and logs it.
    fn finish_step(&mut self, p: Pending) -> Result<(), TrainError> {
        let s = p.step;
        let loss = p.loss.item_f32()? as f64;
        let grad_norm = p.norm.item_f32()? as f64;
        self.summary.steps_completed = s + 1;
        self.summary.tokens = (s as u64 + 1) * self.tokens_per_step();
        if loss.is_finite() {
            self.summary.final_train_loss = Some(loss);
        }
        if self.first_done.is_none() {
            self.first_done = Some(Instant::now());
            // steps submitted so far (this one and those queued behind it) count as start-up
            self.submitted_at_first = self.submitted;
            self.startup.finish("first_step_wait");
            self.summary.startup = self.startup.phases().to_vec();
            self.summary.kernels_fetched = self.startup.kernels_fetched();
            self.summary.time_to_first_step_s = Some(self.startup.total());
        }
        let first = self.first_done.expect("set above");
        let checked = self.divergence.observe(s, loss, grad_norm);
        self.summary.skipped_steps = self.divergence.skipped();
        checked.map_err(|message| TrainError::Diverged { message })?;
        if !(is_log_step(s, self.t.steps, self.t.log_every) || p.val.is_some()) {
            return Ok(());
        }
        let steady = first.elapsed().as_secs_f64();
        let done = (s + 1).saturating_sub(self.submitted_at_first);
        let tok_s = if done > 0 && steady > 0.0 {
            (done as u64 * self.tokens_per_step()) as f64 / steady
        } else {
            0.0
        };
        let lr = self.t.lr * self.t.lr_scale(s);
        let elapsed = self.started.elapsed().as_secs_f64();
        let mfu = self.mfu(tok_s);
        let mem = mixsweep_mlx::memory::stats().unwrap_or_default();
        let record = MetricsRecord {
            step: s,
            train_loss: Some(loss),
            val_loss: p.val,
            lr,
            grad_norm,
            tokens: self.summary.tokens,
            tok_s,
            elapsed_s: elapsed,
            mfu,
            mem_active_bytes: mem.active,
            mem_peak_bytes: mem.peak,
            mem_cache_bytes: mem.cache,
            aux: self.aux_record(&p.aux)?,
        };
        self.metrics.write(&record)?;
        if !self.opts.quiet {
            let val_s = p.val.map(|v| format!(" val={v:.4}")).unwrap_or_default();
            let eta = if done > 0 {
                format!(
                    ", ~{} remaining",
                    format_duration(steady / done as f64 * (self.t.steps - s - 1) as f64)
                )
            } else {
                String::new()
            };
            let phase = self.phase_label(s);
            let mfu = mfu
                .map(|m| format!(" mfu={:.1}%", 100.0 * m))
                .unwrap_or_default();
            println!(
                "  [{}] step {s}/{} loss={loss:.4}{val_s} lr={lr:.6}{phase} tok/s={tok_s:.0}{mfu} ({elapsed:.1}s{eta})",
                self.cfg.name, self.t.steps
            );
        }
        Ok(())
    }

    /// The auxiliary losses of a step, by name.
    fn aux_record(
        &self,
        aux: &[Array],
    ) -> Result<std::collections::BTreeMap<String, f64>, TrainError> {
        let names = self.program.aux_losses.iter().map(|(n, _)| n);
        let mut out = std::collections::BTreeMap::new();
        for (name, a) in names.zip(aux) {
            out.insert(format!("aux.{name}"), a.item_f32()? as f64);
        }
        Ok(out)
    }

    fn phase_label(&self, s: usize) -> String {
        match self.t.phase_at(s) {
            Some((i, _)) => {
                let label = self.t.phases[i]
                    .label
                    .clone()
                    .unwrap_or_else(|| format!("{}", i + 1));
                format!(" phase={label}")
            }
            None => String::new(),
        }
    }
}

/// The validation before the first step runs op by op (`MIXSWEEP_EAGER_FIRST_VAL=0` compiles it).
fn eager_first_validation() -> bool {
    std::env::var("MIXSWEEP_EAGER_FIRST_VAL").map_or(true, |v| v != "0")
}
