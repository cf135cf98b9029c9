//! Warm workers (`MIXSWEEP_WORKERS=1`, the default on GPU slots) on CPU: one `mixsweep-runner
//! worker` trains a slot's trials in turn with the same results as one process per trial; a worker
//! killed mid-trial is replaced and the trial retried; Ctrl-C leaves the trial resumable; later
//! trials of the same model reuse the compiled steps with the same results.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod support;
use support::*;

fn setup(dir: &Path, body: &str) -> PathBuf {
    prepare_bytes(&dir.join("data"));
    std::fs::copy(root().join("examples/tiny.json"), dir.join("tiny.json")).unwrap();
    let p = dir.join("sweep.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

fn mixsweep(dir: &Path, workers: bool, args: &[&str], sweep: &Path, store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.args(args)
        .arg(sweep)
        .arg("--storage")
        .arg(store)
        .env("MIXSWEEP_RUNNER", runner())
        .env("MIXSWEEP_WORKERS", if workers { "1" } else { "0" })
        .env("MIXSWEEP_WORK_DIR", dir.join(format!("work-{workers}")));
    c
}

/// The pid in a `runner.pid` under `work` once a trial has made `steps` metrics lines.
fn worker_with_progress(work: &Path, steps: usize) -> u32 {
    let mut pid = None;
    assert!(
        wait_for(180, || {
            let lines = find(work, "metrics.jsonl")
                .first()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map_or(0, |t| t.lines().count());
            pid = find(work, "runner.pid")
                .first()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|s| s.trim().parse::<u32>().ok());
            lines >= steps && pid.is_some()
        }),
        "no worker made progress"
    );
    pid.unwrap()
}

/// Final train loss, validation loss and step count of every trial of a sweep, in sweep order.
fn finals(store: &Path, sweep: &str) -> Vec<(String, String, u64)> {
    trial_ids(store, sweep)
        .iter()
        .map(|id| {
            let s = json(&store.join(format!("trials/{id}/summary.json")));
            assert_eq!(s["status"], "completed", "{s}");
            (
                s["final_train_loss"].to_string(),
                s["final_val_loss"].to_string(),
                s["steps_completed"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn one_worker_trains_the_slots_trials_in_turn_exactly_like_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = setup(
        d,
        "name: warm\nbase: tiny.json\nsteps: 20\ntrain: data/train_*.bin\nmax_parallel: 1\n\
         grid: {training.lr: [0.003, 0.001]}\nseeds: [1, 2]\n",
    );
    let (warm, cold) = (d.join("warm"), d.join("cold"));
    let o = mixsweep(d, true, &["run"], &s, &warm).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // the banner says how the trials run
    assert!(text(&o).contains("on local warm workers"), "{}", text(&o));
    let o = mixsweep(d, false, &["run"], &s, &cold).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("on local processes"), "{}", text(&o));

    // every trial ran as a job of one and the same worker, in turn
    let ids = trial_ids(&warm, "warm");
    assert_eq!(ids.len(), 4);
    let jobs: Vec<(u32, u32)> = ids
        .iter()
        .map(|id| {
            let log = std::fs::read_to_string(warm.join(format!("trials/{id}/stderr.log")));
            worker_job(&log.unwrap()).expect("no worker line in the trial's stderr.log")
        })
        .collect();
    assert!(jobs.iter().all(|j| j.0 == jobs[0].0), "{jobs:?}");
    let mut numbers: Vec<u32> = jobs.iter().map(|j| j.1).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3, 4]);
    // per-process logs stay per trial: no worker line in process mode, the runner's own lines in both
    for id in &trial_ids(&cold, "warm") {
        let log = std::fs::read_to_string(cold.join(format!("trials/{id}/stderr.log"))).unwrap();
        assert!(worker_job(&log).is_none());
    }
    // the worker's later trials (other lr, other seed) reuse the first one's compiled steps
    for (id, (_, job)) in ids.iter().zip(&jobs) {
        let text = std::fs::read_to_string(warm.join(format!("trials/{id}/summary.json"))).unwrap();
        let s: mixsweep_artifacts::Summary = serde_json::from_str(&text).unwrap();
        let want = if *job == 1 {
            "step_setup"
        } else {
            "step_reused"
        };
        assert!(
            s.startup.iter().any(|p| p.name == want),
            "job {job}: {:?}",
            s.startup
        );
    }
    // bit-identical training: nothing of one trial leaks into the next (seeds, optimizer, the
    // reused compiled steps, caches)
    assert_eq!(finals(&warm, "warm"), finals(&cold, "warm"));
    // no worker is left behind
    assert!(
        wait_for(30, || !signal(jobs[0].0, 0)),
        "the worker outlived the sweep"
    );
}

#[test]
fn a_worker_killed_mid_trial_is_replaced_and_the_trial_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = setup(
        d,
        "name: crash\nbase: tiny.json\nsteps: 150\ntrain: data/train_*.bin\nretries: 1\n\
         set: {training.log_every: 1}\n",
    );
    let store = d.join("runs");
    let run = mixsweep(d, true, &["run", "--quiet"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = worker_with_progress(&d.join("work-true"), 3);
    assert!(signal(pid, libc::SIGKILL));
    let o = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("retrying"), "{err}");
    let id = &trial_ids(&store, "crash")[0];
    let attempt = json(&store.join(format!("trials/{id}/attempt.json")));
    assert_eq!(attempt["attempt"], 2, "{attempt}");
    let summary = json(&store.join(format!("trials/{id}/summary.json")));
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["steps_completed"], 150);
    let log = std::fs::read_to_string(store.join(format!("trials/{id}/stderr.log"))).unwrap();
    let (second, job) = worker_job(&log).unwrap();
    assert_ne!(second, pid, "the killed worker was reused");
    assert_eq!(job, 1, "the retry did not get a fresh worker");
}

#[test]
fn ctrl_c_stops_the_workers_trial_resumably_and_the_next_run_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = setup(
        d,
        "name: stop\nbase: tiny.json\nsteps: 100000\ntrain: data/train_*.bin\n\
         set: {training.log_every: 1}\n",
    );
    let store = d.join("runs");
    let first = mixsweep(d, true, &["run", "--quiet"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = worker_with_progress(&d.join("work-true"), 3);
    assert!(signal(first.id(), libc::SIGINT));
    let o = first.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let id = &trial_ids(&store, "stop")[0];
    let summary = json(&store.join(format!("trials/{id}/summary.json")));
    assert_eq!(summary["status"], "interrupted", "{summary}");
    let cut = summary["steps_completed"].as_u64().unwrap();
    assert!(cut > 0);
    assert!(
        store
            .join(format!("trials/{id}/resume.safetensors"))
            .is_file()
    );
    assert!(
        wait_for(30, || !signal(pid, 0)),
        "the interrupted worker kept running"
    );

    let mut second = mixsweep(d, true, &["run", "--quiet"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(120, || find(&d.join("work-true"), "stderr.log")
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(
                |t| t.contains(&format!("resuming at step {cut}/"))
            ))),
        "the trial did not resume where Ctrl-C stopped it"
    );
    assert!(signal(second.id(), libc::SIGINT));
    assert_eq!(second.wait().unwrap().code(), Some(130));
}
