//! The `slurm` backend: each attempt of a trial is a batch job (`sbatch`) whose runner trains in the
//! trial's work folder, which the compute nodes must share with the orchestrator (`MIXSWEEP_WORK_DIR`
//! on a shared file system); the orchestrator reads the metrics from there and stores the artifacts
//! when the job ends, as for local runs.
//!
//! * The batch script ([`SlurmBackend::batch_script`]) starts the runner in the background and traps
//!   signals: `USR1` (sent `signal_before` ahead of the time limit by `--signal=B:USR1@...`), `USR2`
//!   (our Ctrl-C) and `TERM` (`scancel`, preemption) are forwarded as one SIGINT, so the runner stops
//!   after its current step and writes its resume point. The script records which signal came in
//!   [`SIGNAL_FILE`] and the runner's exit status in [`EXIT_FILE`].
//! * A job that reached its time limit, was preempted or lost its node is submitted again in the same
//!   work folder and continues from the resume point (at most [`MAX_RESUBMITS`] times).
//! * State comes from `squeue` while the job is known to it, then from `scontrol show job` (kept for
//!   `MinJobAge`), then from the files the script wrote; no accounting database is needed. All of a
//!   sweep's trials share one `squeue --me` listing, refreshed at most every [`poll_interval`] (5 s,
//!   `MIXSWEEP_SLURM_POLL` to change), so a large sweep costs slurmctld one query per interval.
//! * Jobs are named `mixsweep-<trial id>` and carry their work folder in `--comment`: a restarted
//!   `mixsweep run` adopts a trial's queued or running job instead of submitting a second one.
//! * Ctrl-C: queued jobs are cancelled, running ones are asked to stop (and cancelled 60 s later).

use super::{AttemptCtx, AttemptEnd, Ending, new_metrics};
use anyhow::{Context, Result, bail};
use mixsweep_artifacts::RunStatus;
use mixsweep_sweep::spec::{SlurmSpec, SweepSpec, parse_duration, parse_memory};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The current job id of a trial's work folder.
pub const JOB_FILE: &str = "slurm_job";
/// Which signal the batch script received (`time_limit`, `stop`, `terminated`).
pub const SIGNAL_FILE: &str = "slurm_signal";
/// The runner's exit status, written by the batch script.
pub const EXIT_FILE: &str = "slurm_exit";
/// Submissions of one attempt after time limits and preemptions.
pub const MAX_RESUBMITS: usize = 20;
/// How long a running job has to stop after our signal before it is cancelled.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// How often a running trial reads its metrics from the shared work folder.
const METRICS_POLL: Duration = Duration::from_millis(500);

/// How old the shared `squeue` listing may get: `MIXSWEEP_SLURM_POLL` (e.g. `2s`), default 5 s.
pub fn poll_interval() -> Duration {
    std::env::var("MIXSWEEP_SLURM_POLL")
        .ok()
        .and_then(|v| parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(5))
}

pub fn job_name(trial_id: &str) -> String {
    format!("mixsweep-{trial_id}")
}

pub struct SlurmBackend {
    spec: SlurmSpec,
    /// Lead time of the stop signal before the time limit.
    signal_before: Duration,
    /// The last `squeue` listing, shared by all trials.
    queue: tokio::sync::Mutex<Listing>,
    poll: Duration,
}

/// This user's jobs as one `squeue` call showed them.
#[derive(Default)]
struct Listing {
    taken: Option<Instant>,
    jobs: Vec<Listed>,
}

#[derive(Debug, Clone, PartialEq)]
struct Listed {
    id: String,
    state: String,
    name: String,
    comment: String,
}

impl Listing {
    fn parse(text: &str) -> Vec<Listed> {
        text.lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, '|');
                let (id, state, name) = (f.next()?, f.next()?, f.next()?);
                Some(Listed {
                    id: id.trim().to_string(),
                    state: state.trim().to_string(),
                    name: name.trim().to_string(),
                    comment: f.next().unwrap_or("").trim().to_string(),
                })
            })
            .filter(|j| !j.id.is_empty())
            .collect()
    }
}

/// A job as `squeue` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Queued {
    id: String,
    state: String,
    work: PathBuf,
}

/// What the batch script and Slurm say about an ended job.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JobEnd {
    /// `scontrol`'s `JobState` (None once Slurm forgot the job).
    pub state: Option<String>,
    pub reason: Option<String>,
    /// The runner's exit status from [`EXIT_FILE`].
    pub exit: Option<i32>,
    /// The signal the script received, from [`SIGNAL_FILE`].
    pub signal: Option<String>,
    /// The runner's `summary.json` status.
    pub summary: Option<RunStatus>,
}

/// What to do once a job ended.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Submit again in the same folder (time limit, preemption, node failure): the reason.
    Resubmit(String),
    Ended(AttemptEnd),
}

/// Decides how an ended job continues; `stopped`: we asked it to stop (Ctrl-C or the sweep's timeout).
pub fn decide(job: &str, end: &JobEnd, stopped: bool) -> Next {
    let state = end.state.as_deref().unwrap_or("");
    if stopped {
        return Next::Ended(AttemptEnd {
            code: end.exit,
            interrupted: true,
            ..Default::default()
        });
    }
    if end.exit == Some(0) || end.summary == Some(RunStatus::Completed) {
        return Next::Ended(AttemptEnd {
            code: Some(0),
            ..Default::default()
        });
    }
    if state.starts_with("CANCELLED") {
        return Next::Ended(AttemptEnd::failed(
            Ending::Cancelled,
            format!("slurm job {job} was cancelled outside mixsweep (scancel)"),
            true,
        ));
    }
    if end.signal.as_deref() == Some("time_limit") || state == "TIMEOUT" {
        return Next::Resubmit(format!("slurm job {job} reached its time limit"));
    }
    if matches!(state, "PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL") {
        let why = end.reason.as_deref().unwrap_or("");
        return Next::Resubmit(
            format!("slurm job {job} ended {state} {why}")
                .trim()
                .to_string(),
        );
    }
    if state == "OUT_OF_MEMORY" {
        return Next::Ended(AttemptEnd::failed(
            Ending::Oom,
            format!(
                "slurm job {job} ran out of memory (raise slurm.memory, or lower training.batch_tokens)"
            ),
            false,
        ));
    }
    match end.exit {
        Some(code) => Next::Ended(AttemptEnd {
            code: Some(code),
            ..Default::default()
        }),
        None => Next::Ended(AttemptEnd::engine(
            format!(
                "slurm job {job} ended {} ({}) before the runner reported an exit status (see stderr.log)",
                if state.is_empty() { "unknown" } else { state },
                end.reason.as_deref().unwrap_or("no reason given")
            ),
            true,
        )),
    }
}

/// Quotes a string for the shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn path_sh(p: &Path) -> String {
    sh(&p.to_string_lossy())
}

/// Runs a Slurm command; its stdout, or an error with its stderr.
async fn slurm(cmd: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {cmd} (Slurm's client tools must be on PATH)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether Slurm still has the job queued or running (for work folders kept by an earlier run).
pub fn job_alive(id: &str) -> bool {
    std::process::Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%T"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
}

/// `JobState` and `Reason` of an ended job from `scontrol show job -o`.
async fn ended_state(id: &str) -> (Option<String>, Option<String>) {
    let Ok(text) = slurm("scontrol", &["show", "job", "-o", id]).await else {
        return (None, None);
    };
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    (field("JobState="), field("Reason=").filter(|r| r != "None"))
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Moves what an adopted job wrote in an earlier run's folder into this attempt's folder.
fn move_results(from: &Path, to: &Path) -> Result<()> {
    for name in [
        "out",
        "stdout.log",
        "stderr.log",
        SIGNAL_FILE,
        EXIT_FILE,
        JOB_FILE,
    ] {
        let (src, dst) = (from.join(name), to.join(name));
        if !src.exists() {
            continue;
        }
        if dst.is_dir() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::rename(&src, &dst)
            .with_context(|| format!("moving {} to {}", src.display(), dst.display()))?;
    }
    let _ = std::fs::remove_dir_all(from);
    Ok(())
}

impl SlurmBackend {
    /// Checks that Slurm answers (`sinfo`) and that the sweep's partition exists.
    pub fn connect(spec: &SweepSpec, _root: &str) -> Result<SlurmBackend> {
        let out = std::process::Command::new("sinfo")
            .args(["-h", "-o", "%P"])
            .output()
            .context(
                "backend: slurm needs Slurm's client tools (sinfo, sbatch, squeue, scancel) on PATH",
            )?;
        if !out.status.success() {
            bail!(
                "backend: slurm: `sinfo` failed ({}); is slurmctld reachable from this machine?",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let partitions: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|p| p.trim().trim_end_matches('*').to_string())
            .collect();
        if let Some(p) = &spec.slurm.partition
            && !partitions.contains(p)
        {
            bail!(
                "slurm.partition {p:?} does not exist; this cluster has: {}",
                partitions.join(", ")
            );
        }
        SlurmBackend::new(spec)
    }

    /// This user's jobs, from a listing no older than `max_age` and taken after `since`.
    async fn listing(&self, since: Option<Instant>, max_age: Duration) -> Result<Vec<Listed>> {
        let mut q = self.queue.lock().await;
        let fresh = q
            .taken
            .is_some_and(|t| t.elapsed() < max_age && since.is_none_or(|s| t >= s));
        if !fresh {
            let text = slurm("squeue", &["-h", "--me", "-o", "%i|%T|%j|%k"]).await?;
            q.jobs = Listing::parse(&text);
            q.taken = Some(Instant::now());
        }
        Ok(q.jobs.clone())
    }

    /// The trial's job that Slurm still has (queued, running, requeued...), if any.
    async fn find_job(&self, name: &str) -> Result<Option<Queued>> {
        let jobs = self.listing(Some(Instant::now()), Duration::ZERO).await?;
        Ok(jobs.into_iter().find_map(|j| {
            let work = j.comment.strip_prefix("mixsweep:")?;
            (j.name == name).then(|| Queued {
                id: j.id.clone(),
                state: j.state.clone(),
                work: PathBuf::from(work),
            })
        }))
    }

    /// `squeue`'s state of one job submitted at `since`; `None` once it left the queue.
    async fn queue_state(&self, id: &str, since: Instant) -> Result<Option<String>> {
        let jobs = self.listing(Some(since), self.poll).await?;
        Ok(jobs.into_iter().find(|j| j.id == id).map(|j| j.state))
    }

    /// The backend for the sweep's `slurm:` settings, without asking the cluster.
    pub fn new(spec: &SweepSpec) -> Result<SlurmBackend> {
        let signal_before = match &spec.slurm.signal_before {
            Some(s) => parse_duration(s).map_err(anyhow::Error::msg)?,
            None => Duration::from_secs(120),
        };
        Ok(SlurmBackend {
            spec: spec.slurm.clone(),
            signal_before,
            queue: Default::default(),
            poll: poll_interval(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "slurm (partition {})",
            self.spec.partition.as_deref().unwrap_or("default")
        )
    }

    /// The `#SBATCH` lines of the sweep's `slurm:` settings.
    fn resource_lines(&self) -> Result<Vec<String>> {
        let s = &self.spec;
        let mut lines = vec![];
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                lines.push(format!("#SBATCH --{flag}={v}"));
            }
        };
        opt("partition", s.partition.clone());
        opt("account", s.account.clone());
        opt("qos", s.qos.clone());
        opt("gpus", s.gpus.map(|g| g.to_string()));
        opt("cpus-per-task", s.cpus.map(|c| c.to_string()));
        if let Some(m) = &s.memory {
            let bytes = parse_memory(m).map_err(anyhow::Error::msg)?;
            opt("mem", Some(format!("{}M", bytes.div_ceil(1 << 20))));
        }
        if let Some(t) = &s.time {
            let d = parse_duration(t).map_err(anyhow::Error::msg)?;
            opt("time", Some(d.as_secs().div_ceil(60).max(1).to_string()));
        }
        for a in &s.sbatch_args {
            lines.push(format!("#SBATCH {a}"));
        }
        Ok(lines)
    }

    /// The batch script of one trial training in `work` (see the module comment).
    pub fn batch_script(&self, ctx: &AttemptCtx<'_>) -> Result<String> {
        let work = ctx.work;
        let cwd = std::env::current_dir().context("reading the current folder")?;
        let runner = match &self.spec.runner {
            Some(r) => PathBuf::from(r),
            None => std::path::absolute(ctx.runner).unwrap_or_else(|_| ctx.runner.to_path_buf()),
        };
        let mut s = String::from("#!/bin/bash\n");
        s += &format!("#SBATCH --job-name={}\n", job_name(&ctx.trial.id));
        s += &format!("#SBATCH --comment=mixsweep:{}\n", work.display());
        s += &format!("#SBATCH --chdir={}\n", cwd.display());
        s += &format!("#SBATCH --output={}\n", work.join("stdout.log").display());
        s += &format!("#SBATCH --error={}\n", work.join("stderr.log").display());
        s += "#SBATCH --open-mode=append\n#SBATCH --nodes=1\n#SBATCH --ntasks=1\n";
        s += &format!(
            "#SBATCH --signal=B:USR1@{}\n",
            self.signal_before.as_secs().max(1)
        );
        for l in self.resource_lines()? {
            s += &l;
            s.push('\n');
        }
        s += &format!("# mixsweep sweep {}, trial {}\n", ctx.sweep, ctx.trial.id);
        if let Some(setup) = &self.spec.setup {
            s += setup.trim_end();
            s.push('\n');
        }
        if let Some((k, v)) = super::local::kernel_cache_env() {
            s += &format!("export {k}=${{{k}:-{}}}\n", path_sh(&v));
        }
        let (sig, exit) = (
            path_sh(&work.join(SIGNAL_FILE)),
            path_sh(&work.join(EXIT_FILE)),
        );
        s += &format!("rm -f {sig} {exit}\n");
        let args: Vec<String> = super::local::work_folder_args(ctx)
            .iter()
            .map(|a| sh(&a.to_string_lossy()))
            .collect();
        s += &format!("{} {} &\npid=$!\n", path_sh(&runner), args.join(" "));
        s += &format!(
            "forward() {{ echo \"$1\" > {sig}; kill -INT \"$pid\" 2>/dev/null; }}\n\
             trap 'forward time_limit' USR1\ntrap 'forward stop' USR2\ntrap 'forward terminated' TERM\n\
             while :; do\n  wait \"$pid\"; rc=$?\n  kill -0 \"$pid\" 2>/dev/null || break\ndone\n\
             echo \"$rc\" > {exit}\nexit \"$rc\"\n"
        );
        Ok(s)
    }

    /// Writes the batch script into the work folder and submits it; the job id.
    async fn submit(&self, ctx: &AttemptCtx<'_>) -> Result<String> {
        let script = ctx.work.join("job.sh");
        std::fs::write(&script, self.batch_script(ctx)?)
            .with_context(|| format!("writing {}", script.display()))?;
        for f in [SIGNAL_FILE, EXIT_FILE] {
            let _ = std::fs::remove_file(ctx.work.join(f));
        }
        let out = slurm("sbatch", &["--parsable", &script.to_string_lossy()]).await?;
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() {
            bail!("sbatch printed no job id");
        }
        std::fs::write(ctx.work.join(JOB_FILE), &id)?;
        Ok(id)
    }

    /// One attempt: adopts the trial's job if Slurm still has one, else submits; follows it through
    /// resubmissions until it ends.
    pub async fn attempt(&self, ctx: &AttemptCtx<'_>) -> Result<AttemptEnd> {
        let name = job_name(&ctx.trial.id);
        let (mut job, mut dir) = match self.find_job(&name).await? {
            Some(q) => {
                (ctx.log)(format!(
                    "{}: adopting slurm job {} ({}) from an earlier run",
                    ctx.trial.id, q.id, q.state
                ));
                (q.id, q.work)
            }
            None => (self.submit(ctx).await?, ctx.work.to_path_buf()),
        };
        let mut resubmits = 0;
        loop {
            let (end, stopped) = self.watch(ctx, &job, &dir).await?;
            if dir != ctx.work {
                move_results(&dir, ctx.work)?;
                dir = ctx.work.to_path_buf();
            }
            match decide(&job, &end, stopped) {
                Next::Ended(e) => return Ok(e),
                Next::Resubmit(why) if resubmits < MAX_RESUBMITS => {
                    resubmits += 1;
                    job = self.submit(ctx).await?;
                    (ctx.log)(format!(
                        "{}: {why}; continuing from its resume point in slurm job {job}",
                        ctx.trial.id
                    ));
                }
                Next::Resubmit(why) => {
                    return Ok(AttemptEnd::engine(
                        format!("{why}, after {MAX_RESUBMITS} resubmissions; giving up"),
                        false,
                    ));
                }
            }
        }
    }
}

/// `plan --backend slurm --scripts`: every trial's batch script, as a run would submit it (the work
/// folders under a run id of `<run>`).
pub fn plan_scripts(sweep: &mixsweep_sweep::Sweep, root: &str) -> Result<String> {
    let backend = SlurmBackend::new(&sweep.spec)?;
    let runner = super::find_runner();
    let run_dir = crate::workdir::sweep_dir(root, &sweep.spec.name).join("<run>");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut text = String::new();
    for t in &sweep.trials {
        let work = run_dir.join(t.id.as_str());
        let ctx = AttemptCtx {
            sweep: &sweep.spec.name,
            trial: t,
            work: &work,
            gpu: None,
            runner: &runner,
            profile: sweep.spec.profile,
            full_eval: sweep.spec.full_eval(),
            timeout: None,
            stop: &stop,
            on_metrics: &|_| {},
            log: &|_| {},
        };
        text += &backend.batch_script(&ctx)?;
        text.push('\n');
    }
    Ok(text)
}

impl SlurmBackend {
    /// Follows one job until Slurm no longer has it, reporting metrics and passing on Ctrl-C and the
    /// sweep's timeout. Returns what is known of its end and whether we stopped it.
    async fn watch(&self, ctx: &AttemptCtx<'_>, job: &str, dir: &Path) -> Result<(JobEnd, bool)> {
        let metrics = dir.join("out/metrics.jsonl");
        let mut offset = 0usize;
        let started = Instant::now();
        let mut stop_sent: Option<Instant> = None;
        loop {
            let state = self.queue_state(job, started).await?;
            for m in new_metrics(&metrics, &mut offset) {
                (ctx.on_metrics)(&m);
            }
            let Some(state) = state else { break };
            let stop = ctx.stop.load(Ordering::SeqCst)
                || ctx.timeout.is_some_and(|d| started.elapsed() > d);
            if stop && stop_sent.is_none() {
                stop_sent = Some(Instant::now());
                if state == "PENDING" {
                    slurm("scancel", &[job]).await?;
                } else {
                    slurm("scancel", &["--batch", "--signal=USR2", job]).await?;
                }
            }
            if stop_sent.is_some_and(|t| t.elapsed() > STOP_GRACE) {
                slurm("scancel", &[job]).await?;
            }
            tokio::time::sleep(METRICS_POLL).await;
        }
        let (state, reason) = ended_state(job).await;
        let summary = std::fs::read(dir.join("out/summary.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<mixsweep_artifacts::Summary>(&b).ok())
            .map(|s| s.status);
        let end = JobEnd {
            state,
            reason,
            exit: read_trimmed(&dir.join(EXIT_FILE)).and_then(|s| s.parse().ok()),
            signal: read_trimmed(&dir.join(SIGNAL_FILE)),
            summary,
        };
        Ok((end, stop_sent.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(state: &str, exit: Option<i32>, signal: Option<&str>) -> JobEnd {
        JobEnd {
            state: Some(state.to_string()),
            exit,
            signal: signal.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn squeue_listing_is_parsed() {
        let jobs =
            Listing::parse("12|RUNNING|mixsweep-ab12|mixsweep:/w/a|b\n13|PENDING|other|(null)\n\n");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].comment, "mixsweep:/w/a|b");
        assert_eq!(
            (jobs[1].id.as_str(), jobs[1].state.as_str()),
            ("13", "PENDING")
        );
    }

    #[test]
    fn ended_jobs_are_classified() {
        let ok = decide("7", &end("COMPLETED", Some(0), None), false);
        assert_eq!(
            ok,
            Next::Ended(AttemptEnd {
                code: Some(0),
                ..Default::default()
            })
        );
        // the time-limit warning: the runner stopped and the job ended normally
        let tl = decide("7", &end("FAILED", Some(130), Some("time_limit")), false);
        assert!(matches!(tl, Next::Resubmit(w) if w.contains("time limit")));
        assert!(matches!(
            decide("7", &end("TIMEOUT", None, None), false),
            Next::Resubmit(_)
        ));
        assert!(matches!(
            decide("7", &end("NODE_FAIL", None, None), false),
            Next::Resubmit(_)
        ));
        let cancelled = decide("7", &end("CANCELLED", Some(130), Some("terminated")), false);
        let Next::Ended(c) = cancelled else {
            panic!("{cancelled:?}")
        };
        assert_eq!(c.failure.unwrap().state, Ending::Cancelled);
        // our own stop wins over everything
        let stopped = decide("7", &end("CANCELLED", None, None), true);
        assert!(matches!(
            stopped,
            Next::Ended(AttemptEnd {
                interrupted: true,
                ..
            })
        ));
        let failed = decide("7", &end("FAILED", Some(2), None), false);
        assert_eq!(
            failed,
            Next::Ended(AttemptEnd {
                code: Some(2),
                ..Default::default()
            })
        );
        let lost = decide("7", &JobEnd::default(), false);
        let Next::Ended(l) = lost else { panic!() };
        assert_eq!(l.failure.unwrap().state, Ending::EngineError);
        let oom = decide("7", &end("OUT_OF_MEMORY", Some(137), None), false);
        let Next::Ended(o) = oom else { panic!() };
        assert_eq!(o.failure.unwrap().state, Ending::Oom);
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
