//! The Docker backend against the real engine on this machine (no registry: the runner image is built
//! here FROM scratch by docker/build-runner-cpu.sh from the runner this test binary was built with).
//! These tests fail, not skip, when no engine is reachable: CI starts one (`.ci/run`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod support;
use support::*;

const IMAGE: &str = "mixsweep-runner:test";

/// Builds the test image once per test binary, and prepares byte-level shards.
fn setup() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    DATA.get_or_init(|| {
        let ping = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
        assert!(
            ping.as_ref().is_ok_and(|o| o.status.success()),
            "these tests need a running Docker engine (`docker info` failed: {ping:?}); .ci/run starts one"
        );
        let o = Command::new("bash")
            .arg(root().join("docker/build-runner-cpu.sh"))
            .arg(IMAGE)
            .env("RUNNER_BIN", runner())
            .output()
            .unwrap();
        assert!(o.status.success(), "image build failed: {}", String::from_utf8_lossy(&o.stderr));
        let dir = std::env::temp_dir().join(format!("mixsweep-docker-data-{}", std::process::id()));
        prepare_bytes(&dir);
        dir
    })
}

fn sweep(dir: &Path, name: &str, extra: &str) -> PathBuf {
    std::fs::copy(root().join("examples/tiny.json"), dir.join("tiny.json")).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nbase: tiny.json\ntrain: {}/train_*.bin\nbackend: docker\nimage: {IMAGE}\n{extra}",
            setup().display()
        ),
    )
    .unwrap();
    path
}

/// `mixsweep run SWEEP --storage STORAGE`.
fn run_sweep(sweep: &Path, storage: &Path) -> Command {
    let mut c = mixsweep();
    c.arg("run").arg(sweep).arg("--storage").arg(storage);
    c
}

fn mixsweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.env("MIXSWEEP_RUNNER", runner());
    c
}

fn containers(filter: &str) -> Vec<String> {
    let o = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", filter])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

// Every test runs trials of its own (its own seeds): trial ids are content hashes and container names
// derive from them, so two tests with the same trial would share (adopt) one container.

/// Waits until the trial's container is running; returns its id. Fails early, with its output, if the
/// orchestrator `child` exits first.
fn wait_running(
    trial_filter: &str,
    within: Duration,
    child: Option<&mut std::process::Child>,
) -> String {
    let t0 = Instant::now();
    let mut child = child;
    loop {
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let mut out = String::new();
            for s in [
                c.stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read>),
                c.stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut s = s;
                let _ = s.read_to_string(&mut out);
            }
            panic!("mixsweep exited ({status}) before a container ran:\n{out}");
        }
        let o = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                trial_filter,
                "--filter",
                "status=running",
            ])
            .output()
            .unwrap();
        if let Some(id) = String::from_utf8_lossy(&o.stdout).lines().next() {
            return id.to_string();
        }
        assert!(
            t0.elapsed() < within,
            "no running container for {trial_filter}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_trials_run_in_containers_and_rank() {
    let dir = tempfile::tempdir().unwrap();
    let s = sweep(
        dir.path(),
        "dock3",
        "grid: {training.lr: [0.001, 0.002, 0.004]}\nsteps: 25\nmax_parallel: 2\ncpus: 1\nmemory: 2g\nprofile: true\n",
    );
    let storage = dir.path().join("runs");
    let o = run_sweep(&s, &storage).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("on docker (mixsweep-runner:test)"), "{out}");
    let done = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.ends_with(" done"))
        .count();
    assert_eq!(done, 3, "{out}");
    for id in trial_ids(&storage, "dock3") {
        let t = storage.join("trials").join(&id);
        let summary = json(&t.join("summary.json"));
        assert_eq!(summary["status"], "completed");
        assert!(summary["best_val_loss"].as_f64().unwrap() < 5.0);
        // written by the runner inside the container, straight to storage
        for f in [
            "config.json",
            "metrics.jsonl",
            "model.safetensors",
            "cpu.pb",
        ] {
            assert!(t.join(f).is_file(), "{id}: {f}");
        }
        // streamed from the container's logs by the orchestrator
        assert!(
            std::fs::read_to_string(t.join("stdout.log"))
                .unwrap()
                .contains("\"train_loss\"")
        );
        assert_eq!(json(&t.join("attempt.json"))["backend"], "docker");
    }
    // containers are removed after success
    assert!(containers("label=io.mixsweep.sweep=dock3").is_empty());
}

/// Runs the one-trial sweep `name`, `docker kill`s its container 2 s into training, and checks that
/// the trial was retried (second attempt) and completed.
fn kill_mid_trial_and_expect_a_retry(s: &Path, storage: &Path, name: &str) {
    let mut child = run_sweep(s, storage)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_running(
        &format!("label=io.mixsweep.sweep={name}"),
        Duration::from_secs(120),
        Some(&mut child),
    );
    std::thread::sleep(Duration::from_secs(2));
    let k = Command::new("docker").args(["kill", &id]).output().unwrap();
    assert!(k.status.success());
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("retrying"), "{out}");
    let trial = &trial_ids(storage, name)[0];
    let attempt = json(&storage.join(format!("trials/{trial}/attempt.json")));
    assert_eq!(attempt["attempt"], 2, "{attempt}");
    assert_eq!(
        json(&storage.join(format!("trials/{trial}/summary.json")))["status"],
        "completed"
    );
}

#[test]
fn a_killed_container_is_retried_and_an_oom_kill_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = sweep(
        dir.path(),
        "dockkill",
        "steps: 120\nretries: 1\nseeds: [11]\n",
    );
    let storage = dir.path().join("runs");
    kill_mid_trial_and_expect_a_retry(&s, &storage, "dockkill");

    // A memory limit far below what the runner needs: OOM-killed, reported as such, not retried;
    // with --keep-failed its container stays for inspection.
    let s = sweep(
        dir.path(),
        "dockoom",
        "steps: 20\nretries: 2\nmemory: 12m\nseeds: [12]\n",
    );
    let o = run_sweep(&s, &storage)
        .arg("--keep-failed")
        .output()
        .unwrap();
    let kept = containers("label=io.mixsweep.sweep=dockoom");
    for c in &kept {
        let _ = Command::new("docker").args(["rm", "-f", c]).output();
    }
    assert_eq!(kept.len(), 1, "the failed container is kept: {}", text(&o));
    assert!(
        text(&o).contains("kept failed container mixsweep-"),
        "{}",
        text(&o)
    );
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("OOM-killed"), "{out}");
    assert!(!out.contains("retrying"), "{out}");
    let trial = &trial_ids(&storage, "dockoom")[0];
    assert_eq!(
        json(&storage.join(format!("trials/{trial}/attempt.json")))["status"],
        "oom"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.ends_with(" oom")),
        "{out}"
    );
}

#[test]
fn a_restarted_orchestrator_adopts_the_running_container() {
    let dir = tempfile::tempdir().unwrap();
    let s = sweep(dir.path(), "dockadopt", "steps: 150\nseeds: [13]\n");
    let storage = dir.path().join("runs");
    let mut first = run_sweep(&s, &storage)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let container = wait_running(
        "label=io.mixsweep.sweep=dockadopt",
        Duration::from_secs(120),
        Some(&mut first),
    );
    std::thread::sleep(Duration::from_secs(2));
    // The orchestrator dies without cleaning up; its container keeps training.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        wait_running(
            "label=io.mixsweep.sweep=dockadopt",
            Duration::from_secs(5),
            None
        ),
        container
    );

    let restarted = Instant::now();
    let o = run_sweep(&s, &storage).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("adopting running container mixsweep-"),
        "{out}"
    );
    let trial = &trial_ids(&storage, "dockadopt")[0];
    let summary = json(&storage.join(format!("trials/{trial}/summary.json")));
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["steps_completed"], 150);
    // The run that finished is the one that started before the restart (no second container).
    assert!(
        summary["wall_time_s"].as_f64().unwrap() > restarted.elapsed().as_secs_f64(),
        "{summary}"
    );
    assert_eq!(
        json(&storage.join(format!("trials/{trial}/attempt.json")))["attempt"],
        1
    );
    assert!(containers("label=io.mixsweep.sweep=dockadopt").is_empty());
}

#[test]
fn ctrl_c_stops_the_containers_and_a_rerun_resumes() {
    ctrl_c_case("dockint", 14, false);
}

#[test]
fn ctrl_c_stops_a_worker_container_and_a_rerun_resumes() {
    ctrl_c_case("dockwint", 18, true);
}

fn ctrl_c_case(name: &str, seed: u64, workers: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s = sweep(
        dir.path(),
        name,
        &format!("steps: 150\nseeds: [{seed}]\nworkers: {workers}\n"),
    );
    let storage = dir.path().join("runs");
    let mut child = run_sweep(&s, &storage)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_running(
        &format!("label=io.mixsweep.sweep={name}"),
        Duration::from_secs(120),
        Some(&mut child),
    );
    std::thread::sleep(Duration::from_secs(3));
    let k = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}");
    assert!(
        containers(&format!("label=io.mixsweep.sweep={name}")).is_empty(),
        "{out}"
    );
    let trial = &trial_ids(&storage, name)[0];
    // The runner stopped after its current step and uploaded what it had.
    let summary = json(&storage.join(format!("trials/{trial}/summary.json")));
    assert_eq!(summary["status"], "interrupted", "{summary}");
    assert!(
        storage
            .join(format!("trials/{trial}/model.safetensors"))
            .is_file()
    );
    let cut = summary["steps_completed"].as_u64().unwrap();
    let resume_point = storage.join(format!("trials/{trial}/resume.safetensors"));
    if cut > 0 {
        assert!(resume_point.is_file(), "no resume point after {cut} steps");
    }
    // Running again continues from the resume point (fetched by the runner in the container) to
    // the end; the finished trial keeps no resume point.
    let o = run_sweep(&s, &storage).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let done = json(&storage.join(format!("trials/{trial}/summary.json")));
    assert_eq!(done["status"], "completed");
    assert_eq!(done["steps_completed"], 150);
    if cut > 0 {
        let log = std::fs::read_to_string(storage.join(format!("trials/{trial}/stderr.log")))
            .unwrap_or_default();
        assert!(
            log.contains(&format!("resuming at step {cut}/150")),
            "{log}"
        );
    }
    assert!(!resume_point.exists());
    // the rerun's attempt ran in a (fresh) worker container, or in a container of its own
    assert_eq!(worker_jobs(&storage, name), [u32::from(workers)]);
}

/// The job number of each trial in the warm worker container that ran it (from its stderr.log).
fn worker_jobs(storage: &Path, sweep: &str) -> Vec<u32> {
    trial_ids(storage, sweep)
        .iter()
        .map(|id| {
            let log = std::fs::read_to_string(storage.join(format!("trials/{id}/stderr.log")))
                .unwrap_or_default();
            worker_job(&log).map_or(0, |(_, job)| job)
        })
        .collect()
}

/// (final train loss, best val loss) of every trial of a sweep, in sweep order.
fn finals(storage: &Path, sweep: &str) -> Vec<(String, String)> {
    trial_ids(storage, sweep)
        .iter()
        .map(|id| {
            let s = json(&storage.join(format!("trials/{id}/summary.json")));
            assert_eq!(s["status"], "completed", "{s}");
            (
                s["final_train_loss"].to_string(),
                s["best_val_loss"].to_string(),
            )
        })
        .collect()
}

#[test]
fn a_warm_worker_container_trains_the_trials_in_turn_like_separate_containers() {
    let dir = tempfile::tempdir().unwrap();
    let s = sweep(
        dir.path(),
        "dockwarm",
        "grid: {training.lr: [0.001, 0.002, 0.004]}\nsteps: 25\nseeds: [15]\nmax_parallel: 1\nworkers: true\n",
    );
    let (warm, cold) = (dir.path().join("warm"), dir.path().join("cold"));
    let o = run_sweep(&s, &warm).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("on docker (mixsweep-runner:test) warm workers"),
        "{out}"
    );
    assert_eq!(out.matches("started worker container").count(), 1, "{out}");
    // one container ran the three trials as jobs 1, 2, 3
    let mut jobs = worker_jobs(&warm, "dockwarm");
    jobs.sort();
    assert_eq!(jobs, [1, 2, 3], "{out}");
    for id in trial_ids(&warm, "dockwarm") {
        let t = warm.join("trials").join(&id);
        for f in ["config.json", "metrics.jsonl", "model.safetensors"] {
            assert!(t.join(f).is_file(), "{id}: {f}");
        }
        let stdout = std::fs::read_to_string(t.join("stdout.log")).unwrap();
        assert!(stdout.contains("\"train_loss\""), "{stdout}");
        // the worker's answer and end mark are protocol, not the trial's output
        assert!(!stdout.contains("\"exit\""), "{stdout}");
        let stderr = std::fs::read_to_string(t.join("stderr.log")).unwrap();
        assert!(!stderr.contains("mixsweep_worker_end"), "{stderr}");
    }
    // the idle worker is removed when the run ends
    assert!(containers("label=io.mixsweep.sweep=dockwarm").is_empty());

    // the same trials in one container each: bit-identical results
    let o = run_sweep(&s, &cold)
        .env("MIXSWEEP_WORKERS", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(worker_jobs(&cold, "dockwarm"), [0, 0, 0]);
    assert_eq!(finals(&warm, "dockwarm"), finals(&cold, "dockwarm"));
}

#[test]
fn a_killed_worker_container_is_replaced_and_a_left_one_is_stopped_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = sweep(
        dir.path(),
        "dockwkill",
        "steps: 150\nretries: 1\nseeds: [16]\nworkers: true\n",
    );
    let storage = dir.path().join("runs");
    kill_mid_trial_and_expect_a_retry(&s, &storage, "dockwkill");
    // the retry ran as the first job of a fresh worker
    assert_eq!(worker_jobs(&storage, "dockwkill"), [1]);
    assert!(containers("label=io.mixsweep.sweep=dockwkill").is_empty());

    // An orchestrator that dies leaves its worker training; the next run stops it (SIGINT: the
    // trial keeps a resume point) and resumes the trial instead of training it twice at once.
    let s = sweep(
        dir.path(),
        "dockwleft",
        "steps: 400\nseeds: [17]\nworkers: true\n",
    );
    let mut first = run_sweep(&s, &storage)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_running(
        "label=io.mixsweep.sweep=dockwleft",
        Duration::from_secs(120),
        Some(&mut first),
    );
    std::thread::sleep(Duration::from_secs(3));
    first.kill().unwrap();
    first.wait().unwrap();
    let o = run_sweep(&s, &storage).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("left running by an earlier run"), "{out}");
    let trial = &trial_ids(&storage, "dockwleft")[0];
    let summary = json(&storage.join(format!("trials/{trial}/summary.json")));
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["steps_completed"], 400);
    let log = std::fs::read_to_string(storage.join(format!("trials/{trial}/stderr.log"))).unwrap();
    assert!(log.contains("resuming at step "), "{log}");
    assert!(containers("label=io.mixsweep.sweep=dockwleft").is_empty());
}
