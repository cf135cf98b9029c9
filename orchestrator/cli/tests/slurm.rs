//! `backend: slurm` end to end against a real one-node Slurm (`scripts/ensure-slurm.sh`; `.ci/run`
//! starts it): a 4-trial sweep, the time-limit signal and resubmission with the same losses as an
//! uninterrupted run, `scancel` of a running job reported and rerun, and a restarted orchestrator
//! adopting the running job instead of submitting a second one.
//!
//! The tests share the one node and its job queue, so they take a lock and run one at a time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod support;
use support::*;

static SLURM: Mutex<()> = Mutex::new(());

fn need_slurm() {
    let ok = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    assert!(
        ok,
        "no Slurm answers here: run `bash scripts/ensure-slurm.sh` (root; installs slurm-wlm and munge)"
    );
}

fn setup(dir: &Path, body: &str) -> PathBuf {
    prepare_bytes(&dir.join("data"));
    std::fs::copy(root().join("examples/tiny.json"), dir.join("tiny.json")).unwrap();
    let p = dir.join("sweep.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

fn mixsweep(args: &[&str], sweep: &Path, storage: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.args(args)
        .arg(sweep)
        .arg("--storage")
        .arg(storage)
        .current_dir(sweep.parent().unwrap())
        .env("MIXSWEEP_RUNNER", runner())
        .env("MIXSWEEP_WORK_DIR", storage.parent().unwrap().join("work"))
        .env("MIXSWEEP_SLURM_POLL", "1s");
    c
}

/// The work folder of a trial of the sweep's current run (there is one run folder at a time).
fn work_folder(storage: &Path, id: &str) -> Option<PathBuf> {
    let work = storage.parent().unwrap().join("work");
    walk(&work, 4)
        .into_iter()
        .find(|p| p.ends_with(id) && p.join("slurm_job").is_file())
}

fn walk(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            if depth > 1 {
                out.extend(walk(&p, depth - 1));
            }
            out.push(p);
        }
    }
    out
}

/// Waits until the trial's job has logged at least `step` training steps; its work folder and job id.
fn wait_for_step(storage: &Path, id: &str, step: u64) -> (PathBuf, String) {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the job never reached step {step}"
        );
        if let Some(w) = work_folder(storage, id) {
            let reached = std::fs::read_to_string(w.join("out/metrics.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|m| m["step"].as_u64())
                .max()
                .is_some_and(|s| s >= step);
            if reached {
                let job = std::fs::read_to_string(w.join("slurm_job")).unwrap();
                return (w, job.trim().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn jobs_named(name: &str) -> usize {
    let o = Command::new("squeue")
        .args(["-h", "--name", name, "-o", "%i"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

fn summary(storage: &Path, id: &str) -> serde_json::Value {
    json(&storage.join(format!("trials/{id}/summary.json")))
}

/// The training losses of a stored trial, by step.
fn losses(storage: &Path, id: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(storage.join(format!("trials/{id}/metrics.jsonl")))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| Some((m["step"].as_u64()?, m["train_loss"].as_f64()?)))
        .collect()
}

const LONG: &str = "name: long\nbackend: slurm\nbase: tiny.json\nsteps: 200\nseeds: [3]\ntrain: data/train_*.bin\nset: {training.log_every: 10}\n";

#[test]
fn four_trial_sweep_runs_as_batch_jobs() {
    let _one = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    need_slurm();
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        "name: four\nbackend: slurm\nbase: tiny.json\ngrid: {training.lr: [0.001, 0.003]}\nsteps: 30\nseeds: [1, 2]\ntrain: data/train_*.bin\nslurm: {cpus: 1, memory: 2g, time: 10m}\n",
    );
    let store = dir.path().join("runs");
    let o = mixsweep(&["run"], &s, &store).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("on slurm (partition default)"),
        "{}",
        text(&o)
    );
    for id in trial_ids(&store, "four") {
        assert_eq!(summary(&store, &id)["status"], "completed");
        let attempt = json(&store.join(format!("trials/{id}/attempt.json")));
        assert_eq!(attempt["backend"], "slurm");
        assert_eq!(attempt["status"], "completed");
        // the batch job wrote the runner's logs, and the losses fell
        assert!(store.join(format!("trials/{id}/stderr.log")).is_file());
        let l = losses(&store, &id);
        assert!(l.last().unwrap().1 < l[0].1, "{id}: {l:?}");
    }
    let plan = mixsweep(&["plan", "--backend", "slurm", "--scripts"], &s, &store)
        .output()
        .unwrap();
    let scripts = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.status.success(), "{}", text(&plan));
    assert_eq!(scripts.matches("#!/bin/bash").count(), 4, "{scripts}");
    assert!(scripts.contains("#SBATCH --mem=2048M") && scripts.contains("#SBATCH --time=10"));
}

#[test]
fn time_limit_signal_resubmits_and_matches_an_uninterrupted_run() {
    let _one = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    need_slurm();
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path(), LONG);
    let store = dir.path().join("runs");
    let child = mixsweep(&["run"], &s, &store)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let id = trial_ids_when_listed(&store, "long");
    let (work, job) = wait_for_step(&store, &id, 40);
    // what Slurm sends `signal_before` ahead of the time limit (--signal=B:USR1@...)
    let o = Command::new("scancel")
        .args(["--batch", "--signal=USR1", &job])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("slurm job {job} reached its time limit")),
        "{log}"
    );
    assert_eq!(summary(&store, &id)["status"], "completed");
    let stderr = std::fs::read_to_string(store.join(format!("trials/{id}/stderr.log"))).unwrap();
    assert!(stderr.contains("resuming at step"), "{stderr}");
    assert!(
        !work.exists(),
        "the work folder stays until the trial is stored: {}",
        work.display()
    );

    // the same trial without interruption, as a local process
    let reference = dir.path().join("reference");
    let o = mixsweep(&["run", "--backend", "local", "--quiet"], &s, &reference)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (a, b) = (losses(&store, &id), losses(&reference, &id));
    assert_eq!(a.last().unwrap().0, 199);
    let at = |l: &[(u64, f64)], s: u64| l.iter().rev().find(|(st, _)| *st == s).map(|p| p.1);
    for step in [50, 100, 150, 199] {
        let (x, y) = (at(&a, step).unwrap(), at(&b, step).unwrap());
        assert!(
            (x - y).abs() < 1e-5,
            "step {step}: resumed {x} vs uninterrupted {y}"
        );
    }
}

/// The trial ids once the run has written its listing.
fn trial_ids_when_listed(store: &Path, sweep: &str) -> String {
    let start = Instant::now();
    while !store.join(format!("sweeps/{sweep}/trials.jsonl")).is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never listed its trials"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    trial_ids(store, sweep)[0].clone()
}

#[test]
fn scancel_is_reported_and_the_trial_runs_again() {
    let _one = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    need_slurm();
    let dir = tempfile::tempdir().unwrap();
    let s = setup(
        dir.path(),
        &LONG.replace("steps: 200", "steps: 120\nretries: 1"),
    );
    let store = dir.path().join("runs");
    let child = mixsweep(&["run"], &s, &store)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let id = trial_ids_when_listed(&store, "long");
    let (_, job) = wait_for_step(&store, &id, 30);
    assert!(
        Command::new("scancel")
            .arg(&job)
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "slurm job {job} was cancelled outside mixsweep (scancel)"
        )),
        "{log}"
    );
    assert!(log.contains("retrying"), "{log}");
    assert_eq!(summary(&store, &id)["status"], "completed");
}

#[test]
fn a_restarted_run_adopts_the_running_job() {
    let _one = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    need_slurm();
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path(), LONG);
    let store = dir.path().join("runs");
    let mut first = mixsweep(&["run", "--quiet"], &s, &store).spawn().unwrap();
    let id = trial_ids_when_listed(&store, "long");
    let (_, job) = wait_for_step(&store, &id, 30);
    // the orchestrator dies (kill -9): its batch job keeps running
    first.kill().unwrap();
    first.wait().unwrap();
    let name = format!("mixsweep-{id}");
    assert_eq!(jobs_named(&name), 1);
    let mut second = mixsweep(&["run"], &s, &store)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(second.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("adopting slurm job") {
            // never a second job for the trial
            assert_eq!(jobs_named(&name), 1, "{line}");
        }
        log += &line;
        log.push('\n');
    }
    assert!(second.wait().unwrap().success(), "{log}");
    assert!(log.contains(&format!("adopting slurm job {job}")), "{log}");
    let sum = summary(&store, &id);
    assert_eq!(sum["status"], "completed");
    assert_eq!(sum["steps_completed"], 200);
    // one job did all the training: no resume
    let stderr = std::fs::read_to_string(store.join(format!("trials/{id}/stderr.log"))).unwrap();
    assert!(!stderr.contains("resuming at step"), "{stderr}");
}
