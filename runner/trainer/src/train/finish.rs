//! The end of a run: final validation of the live and averaged weights, exports
//! (`model.safetensors`, `model.swa.safetensors`), the resume point of an interrupted run, and
//! `summary.json`.

use super::Summary;
use super::TrainError;
use super::exports::to_host;
use super::io_err;
use super::record::{format_duration, write_json_atomic};
use super::resume::{self, Meta, Snapshot};
use super::run::Run;
use mixsweep_artifacts::RunStatus;
use mixsweep_mlx::Array;

impl Run<'_> {
    /// Final validation (live and averaged weights), exports, resume point and summary.
    pub fn finish(mut self, outcome: Result<(), TrainError>) -> Result<Summary, TrainError> {
        // throughput of the steps alone, before the final validation compiles and runs: the steps
        // submitted after the first one finished (those queued before it may already be done)
        let steady = self
            .first_done
            .map(|f| f.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let timed = self
            .summary
            .steps_completed
            .saturating_sub(self.submitted_at_first);
        let done = self.summary.steps_completed.saturating_sub(self.start);
        (self.summary.mean_tok_s, self.summary.tok_s_steps) = if timed > 0 && steady > 0.0 {
            let tok = (timed as u64 * self.tokens_per_step()) as f64;
            (tok / steady, timed)
        } else if done > 0 {
            // too short for a steady figure: every step over the whole run, start-up included
            let tok = (done as u64 * self.tokens_per_step()) as f64;
            (tok / self.started.elapsed().as_secs_f64(), 0)
        } else {
            (0.0, 0)
        };
        let ended = outcome.is_ok()
            && (self.summary.steps_completed == self.t.steps || self.summary.stop_reason.is_some());
        if ended {
            self.final_validation()?;
        }
        self.summary.mfu = self.mfu(self.summary.mean_tok_s).filter(|m| *m > 0.0);
        self.summary.wall_time_s = self.started.elapsed().as_secs_f64();
        self.summary.peak_memory_bytes = mixsweep_mlx::memory::stats().map(|s| s.peak).unwrap_or(0);
        self.summary.status = match &outcome {
            Ok(()) => RunStatus::Completed,
            Err(TrainError::Diverged { .. }) => RunStatus::Diverged,
            Err(TrainError::Interrupted | TrainError::InterruptedMidStep(_)) => {
                RunStatus::Interrupted
            }
            Err(_) => RunStatus::Failed,
        };
        if let Err(e) = &outcome {
            self.summary.error = Some(e.to_string());
        }
        // Keep the weights of every run that got anywhere. Not those of a diverged run (not finite)
        // nor of one whose step failed (a failed computation, not the weights of any step).
        let weights_kept = !matches!(
            outcome,
            Err(TrainError::Diverged { .. }
                | TrainError::Mlx(_)
                | TrainError::InterruptedMidStep(_))
        );
        if weights_kept && self.summary.steps_completed > 0 {
            self.export()?;
            if let Some(scheme) = self.opts.quantize {
                self.export_quantized(&scheme)?;
            }
            if matches!(outcome, Err(TrainError::Interrupted))
                && self.summary.steps_completed > self.start
            {
                self.save_resume()?;
            }
        }
        // A finished run needs no resume point any more (a stale one would be uploaded and resumed).
        let resume_path = self.out_dir.join(resume::RESUME_FILE);
        if outcome.is_ok() && resume_path.is_file() {
            std::fs::remove_file(&resume_path)
                .map_err(|e| io_err("cannot remove", &resume_path, e))?;
        }
        write_json_atomic(&self.out_dir.join("summary.json"), &self.summary)?;
        if !self.opts.quiet {
            self.print_footer();
        }
        // a worker's next trial of this model may reuse the compiled steps; not after a step failed
        let step_failed = matches!(
            outcome,
            Err(TrainError::Mlx(_) | TrainError::InterruptedMidStep(_))
        );
        if let (Some(cache), false) = (&self.opts.step_cache, step_failed) {
            cache.keep(self.steps);
        }
        outcome.map(|_| self.summary)
    }

    fn final_validation(&mut self) -> Result<(), TrainError> {
        let params = self.state.params.clone();
        // an early stop validated these weights already
        let val = match (
            self.summary.stop_reason.is_some(),
            self.summary.final_val_loss,
        ) {
            (true, Some(v)) => Some(v),
            _ => self.validate(&params)?,
        };
        if let Some(v) = val {
            self.summary.validated(v);
            let step = self.summary.steps_completed;
            self.metrics.write(
                &serde_json::json!({"step": step, "val_loss": v, "tokens": self.summary.tokens,
                "elapsed_s": self.started.elapsed().as_secs_f64()}),
            )?;
            if !self.opts.quiet {
                println!("  [{}] completed_steps={step} val={v:.4}", self.cfg.name);
            }
        }
        let averaged = self
            .averager
            .as_ref()
            .and_then(|a| a.weights())
            .map(<[Array]>::to_vec);
        if let Some(w) = &averaged {
            self.summary.swa_val_loss = self.validate(w)?;
            if let (Some(v), false) = (self.summary.swa_val_loss, self.opts.quiet) {
                println!(
                    "  [{}] averaged weights (SWA/EMA): val={v:.4}",
                    self.cfg.name
                );
            }
        }
        if let (Some(tables), Some(v)) = (&self.lookup, &self.val_stream) {
            let (bt, seq) = (self.t.batch_tokens, self.cfg.seq_len);
            // test-time training adapts a copy of the weights and optimizer state
            let mut adapted = self.state.clone();
            let ttt = ttt_run(&self.t, &mut adapted, self.summary.steps_completed as u64);
            let full = crate::eval::full_validation(
                &mut self.steps,
                &params,
                v,
                bt,
                seq,
                Some(tables),
                ttt,
            )?;
            self.summary.full_val_loss = Some(full.val_loss);
            self.summary.val_bpb = full.val_bpb;
            self.summary.full_val_tokens = Some(full.tokens);
            if !self.opts.quiet {
                println!(
                    "  [{}] full validation: loss={:.4} over {} tokens, {:.4} bits/byte",
                    self.cfg.name,
                    full.val_loss,
                    full.tokens,
                    full.val_bpb.unwrap_or(f64::NAN)
                );
            }
            if let Some(w) = &averaged {
                let mut adapted = self.state.clone();
                adapted.params = w.clone();
                let ttt = ttt_run(&self.t, &mut adapted, self.summary.steps_completed as u64);
                let full = crate::eval::full_validation(
                    &mut self.steps,
                    w,
                    v,
                    bt,
                    seq,
                    Some(tables),
                    ttt,
                )?;
                self.summary.swa_full_val_loss = Some(full.val_loss);
                self.summary.swa_val_bpb = full.val_bpb;
            }
        }
        Ok(())
    }

    /// An interrupted run keeps its optimizer state, detector states and step, for `--resume`.
    pub(super) fn save_resume(&self) -> Result<(), TrainError> {
        let mut meta = Meta::new();
        for (k, v) in [
            ("best_val_loss", self.summary.best_val_loss),
            ("final_val_loss", self.summary.final_val_loss),
            ("final_train_loss", self.summary.final_train_loss),
        ] {
            if let Some(v) = v {
                meta.insert(k.to_string(), v.to_string());
            }
        }
        self.divergence.save(&mut meta);
        self.stopper.save(&mut meta);
        if let Some(a) = &self.averager {
            a.save(&mut meta);
        }
        let state: Vec<&Array> = self.state.state_arrays().collect();
        let snapshot = Snapshot {
            step: self.summary.steps_completed,
            params: to_host(&self.state.params)?,
            state: state
                .iter()
                .map(|a| a.to_vec_f32())
                .collect::<Result<_, _>>()?,
            averaged: self
                .averager
                .as_ref()
                .and_then(|a| a.weights())
                .map(to_host)
                .transpose()?,
            meta,
            weights: &self.program.weights,
        };
        resume::save(
            &self.out_dir.join(resume::RESUME_FILE),
            &self.cfg,
            &self.plan,
            snapshot,
        )
    }

    fn print_footer(&self) {
        let s = &self.summary;
        let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
        let stop = s
            .stop_reason
            .as_ref()
            .map(|r| format!(" (stopped early: {r})"))
            .unwrap_or_default();
        println!(
            "  [{}] {}: steps={}/{} final_train={} best_val={} tok/s={:.0} wall={}{stop}",
            self.cfg.name,
            s.status,
            s.steps_completed,
            self.t.steps,
            f(s.final_train_loss),
            f(s.best_val_loss),
            s.mean_tok_s,
            format_duration(s.wall_time_s)
        );
    }
}

/// The test-time training of a full validation pass, when the config asks for it.
pub fn ttt_run<'a>(
    t: &mixsweep_model::TrainingConfig,
    state: &'a mut crate::step::TrainState,
    t0: u64,
) -> Option<crate::eval::TttRun<'a>> {
    t.ttt.map(|c| crate::eval::TttRun {
        state,
        steps: c.steps,
        lr_scale: (c.lr / t.lr) as f32,
        t0,
    })
}
