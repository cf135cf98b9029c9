//! `mixsweep run` end to end with the real runner on CPU: a 4-trial sweep, cache on rerun, resume
//! after Ctrl-C, and failures that must not be retried.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod support;
use support::*;

/// Byte-level Shakespeare shards in `dir/data`, made with the real runner.
fn data(dir: &Path) {
    prepare_bytes(&dir.join("data"));
}

fn sweep(dir: &Path, body: &str) -> PathBuf {
    for f in ["tiny.json", "tiny_mamba.json"] {
        std::fs::copy(root().join("examples").join(f), dir.join(f)).unwrap();
    }
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
        .env("MIXSWEEP_RUNNER", runner())
        .env("MIXSWEEP_WORK_DIR", storage.parent().unwrap().join("work"));
    c
}

/// The `stderr.log` of a running trial in the work folder of `storage`'s runs.
fn live_stderr(storage: &Path, id: &str) -> Option<PathBuf> {
    let sweeps = storage.parent().unwrap().join("work");
    // work/<storage key>/<sweep>/<run id>/<trial>/stderr.log
    for a in std::fs::read_dir(sweeps).ok()?.flatten() {
        for b in std::fs::read_dir(a.path()).ok()?.flatten() {
            for run in std::fs::read_dir(b.path()).ok()?.flatten() {
                let p = run.path().join(id).join("stderr.log");
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn summary(storage: &Path, id: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(storage.join(format!("trials/{id}/summary.json"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn four_trial_sweep_runs_ranks_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    data(dir.path());
    let s = sweep(
        dir.path(),
        "name: four\nvariants:\n  - {name: attention, base: tiny.json}\n  - {name: mamba, base: tiny_mamba.json}\ngrid: {training.lr: [0.001, 0.003]}\nsteps: 30\nseeds: [1]\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let cache = dir.path().join("cache");
    let o = mixsweep(&["run"], &s, &store)
        .env("MIXSWEEP_CACHE", &cache)
        .env_remove("MIXSWEEP_KERNEL_CACHE")
        .env_remove("MLX_PTX_CACHE_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // local runners share one kernel cache (per MLX version) under $MIXSWEEP_CACHE
    let kernels = std::fs::read_dir(cache.join("mlx-kernels/local"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        kernels.len() == 1 && kernels[0].starts_with("mlx-"),
        "{kernels:?}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = out.lines().filter(|l| l.ends_with(" done")).collect();
    assert_eq!(rows.len(), 4, "{out}");
    // ranked: best_val (7th column) ascending
    let vals: Vec<f64> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(6).unwrap().parse().unwrap())
        .collect();
    assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{out}");
    for id in trial_ids(&store, "four") {
        assert_eq!(summary(&store, &id)["status"], "completed");
        for f in [
            "config.json",
            "metrics.jsonl",
            "model.safetensors",
            "stdout.log",
            "stderr.log",
            "attempt.json",
        ] {
            assert!(
                store.join(format!("trials/{id}/{f}")).is_file(),
                "{id}/{f} missing"
            );
        }
    }
    // the same sweep again: everything cached, nothing run
    let o = mixsweep(&["run"], &s, &store).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("4 trials, 0 to run, 4 cached"));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.ends_with(" cached"))
            .count(),
        4
    );
    let plan = mixsweep(&["plan"], &s, &store).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plan.stdout)
            .lines()
            .filter(|l| l.ends_with(" done"))
            .count(),
        4
    );
}

#[test]
fn interrupted_sweep_resumes_without_rerunning_finished_trials() {
    let dir = tempfile::tempdir().unwrap();
    data(dir.path());
    let s = sweep(
        dir.path(),
        "name: resume\nbase: tiny.json\nzip: {training.lr: [0.001, 0.002, 0.003], training.steps: [20, 2000, 20]}\nseeds: [1]\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let mut child = mixsweep(&["run"], &s, &store)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // wait for the first trial to finish, then give the long second one a moment and press Ctrl-C
    for line in lines.by_ref() {
        if line.unwrap().starts_with("done ") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(signal(child.id(), 2));
    for _ in lines {}
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let ids = trial_ids(&store, "resume");
    let done_before = summary(&store, &ids[0]);
    assert_eq!(done_before["status"], "completed");
    let second =
        std::fs::read_to_string(store.join(format!("trials/{}/attempt.json", ids[1]))).unwrap();
    assert!(second.contains("\"interrupted\""), "{second}");
    // the third trial was still queued (max_parallel 1): never started, nothing written for it
    for f in ["summary.json", "attempt.json", "config.json"] {
        assert!(
            !store.join(format!("trials/{}/{f}", ids[2])).exists(),
            "queued trial has {f}"
        );
    }

    // the interrupted trial left a resume point in storage
    let cut = summary(&store, &ids[1])["steps_completed"]
        .as_u64()
        .unwrap();
    assert!(cut > 0, "the long trial made no progress before Ctrl-C");
    assert!(
        store
            .join(format!("trials/{}/resume.safetensors", ids[1]))
            .is_file()
    );

    // Run again: the finished trial is cached, the interrupted one continues from its resume point
    // (its runner says so on stderr); stop it again once it has.
    let o = mixsweep(&["run", "--quiet"], &s, &store)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = std::time::Instant::now();
    while !live_stderr(&store, &ids[1])
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| t.contains("resuming at step"))
        && waiting.elapsed() < std::time::Duration::from_secs(120)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(signal(o.id(), 2));
    let out = o.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&ids[0]) && l.ends_with(" cached")),
        "{stdout}"
    );
    assert_eq!(
        summary(&store, &ids[0])["wall_time_s"],
        done_before["wall_time_s"],
        "the finished trial was run again"
    );
    let log = std::fs::read_to_string(store.join(format!("trials/{}/stderr.log", ids[1]))).unwrap();
    assert!(
        log.contains(&format!("resuming at step {cut}/2000")),
        "{log}"
    );
    let again = summary(&store, &ids[1]);
    assert_eq!(again["status"], "interrupted");
    assert!(again["steps_completed"].as_u64().unwrap() >= cut, "{again}");
    // its metrics continue the first attempt's (one line per logged step, none lost)
    let metrics =
        std::fs::read_to_string(store.join(format!("trials/{}/metrics.jsonl", ids[1]))).unwrap();
    assert!(
        metrics.lines().next().unwrap().contains("\"step\":0,"),
        "{metrics}"
    );

    // `--rerun all` starts everything from scratch: the resume point is dropped before any trial runs
    let point = store.join(format!("trials/{}/resume.safetensors", ids[1]));
    assert!(point.is_file());
    let o = mixsweep(&["run", "--quiet", "--rerun", "all"], &s, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waiting = std::time::Instant::now();
    while point.exists() && waiting.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!point.exists(), "--rerun all kept the resume point");
    assert!(signal(o.id(), 2));
    let _ = o.wait_with_output();
}

#[test]
fn config_errors_fail_once_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    data(dir.path());
    // vocab 64 passes validation but the byte data holds ids up to 255: a data error (exit 2)
    let s = sweep(
        dir.path(),
        "name: bad\nbase: tiny.json\nset: {vocab_size: 64}\nretries: 3\ntrain: data/train_*.bin\n",
    );
    let store = dir.path().join("runs");
    let o = mixsweep(&["run"], &s, &store).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("FAILED") && err.contains("vocab_size 64"),
        "{err}"
    );
    assert!(
        !err.contains("retrying"),
        "config errors must not be retried: {err}"
    );
    let id = &trial_ids(&store, "bad")[0];
    let attempt: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(store.join(format!("trials/{id}/attempt.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["exit_code"], 2);
}

#[test]
fn runtime_failures_are_retried_and_timeouts_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A stand-in runner that crashes like a runtime failure (exit 1) and counts its starts.
    let fake = d.join("crashing-runner");
    let counter = d.join("starts");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho x >> {}\necho 'CUDA error: out of memory' >&2\nexit 1\n",
            counter.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    std::fs::create_dir(d.join("data")).unwrap();
    let mut shard = vec![0u8; 1024];
    shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
    shard[4..8].copy_from_slice(&1i32.to_le_bytes());
    shard[8..12].copy_from_slice(&200i32.to_le_bytes());
    shard.extend((0..200u16).flat_map(|t| (t % 256).to_le_bytes()));
    std::fs::write(d.join("data/train_00000.bin"), &shard).unwrap();
    let s = sweep(
        d,
        "name: flaky\nbase: tiny.json\nretries: 2\ntrain: data/train_*.bin\n",
    );
    let store = d.join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
        .arg("run")
        .arg(&s)
        .arg("--storage")
        .arg(&store)
        .env("MIXSWEEP_RUNNER", &fake)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        3,
        "1 attempt + 2 retries: {err}"
    );
    assert!(
        err.contains("retrying") && err.contains("out of memory"),
        "{err}"
    );

    // A trial over its time limit is stopped and not retried.
    let s = sweep(
        d,
        "name: slow\nbase: tiny.json\nsteps: 100000\ntimeout: 3s\nretries: 2\ntrain: data/train_*.bin\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
        .arg("run")
        .arg(&s)
        .arg("--storage")
        .arg(&store)
        .env("MIXSWEEP_RUNNER", runner())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("timed out") && !err.contains("retrying"),
        "{err}"
    );
}

/// A fake `nvidia-smi` in `dir/bin` reporting one GPU of `FAKE_GPU_MIB` MiB (the CPU runner ignores
/// the GPU it is given, so GPU slots can be scheduled on a machine without one).
fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nvidia-smi");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\n  -L) echo 'GPU 0: Fake GPU (UUID: GPU-fake)' ;;\n  \
         --query-gpu=*) echo \"0, Fake GPU, ${FAKE_GPU_MIB}\" ;;\n  *) exit 1 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn trials_per_gpu_auto_calibrates_each_shape_once_packs_by_memory_and_refuses_what_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    data(d);
    let bin = fake_nvidia_smi(d);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    // trial ids are content hashes: each sweep gets seeds of its own
    let body = |name: &str, seeds: &str| {
        format!(
            "name: {name}\nbase: tiny.json\ntrain: data/train_*.bin\nsteps: 8\ntrials_per_gpu: auto\n\
             grid: {{training.lr: [0.003, 0.001]}}\nseeds: [{seeds}]\n"
        )
    };
    let s = sweep(d, &body("auto", "1, 2"));
    let storage = d.join("runs");
    let run = |s: &Path, mib: &str| {
        mixsweep(&["run"], s, &storage)
            .env("PATH", &path)
            .env("FAKE_GPU_MIB", mib)
            .env("MIXSWEEP_CACHE", d.join("cache"))
            .output()
            .unwrap()
    };
    // 2048 MiB: 0.9 * 2048 / (tiny's few MB + 512 MiB of context) -> 3 per GPU
    let o = run(&s, "2048");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // the four trials differ only in seed and learning rate: one shape, one calibration run
    assert_eq!(out.matches("calibrating shape").count(), 1, "{out}");
    assert!(out.contains("calibrating shape 1/1"), "{out}");
    assert!(
        out.contains("trials_per_gpu auto: 3 per GPU on Fake GPU"),
        "{out}"
    );
    assert!(out.contains("3 at a time"), "{out}");
    let packing = json(&storage.join("sweeps/auto/packing.json"));
    assert_eq!(packing["trials_per_gpu"], 3, "{packing}");
    let peak = packing["peak_bytes"].as_u64().unwrap();
    assert!(peak > 100_000 && peak < 200 << 20, "{packing}");
    for id in trial_ids(&storage, "auto") {
        assert_eq!(summary(&storage, &id)["status"], "completed");
    }

    // Another sweep of the same shape: the cached calibration decides (plan says so too), no run.
    let s2 = sweep(d, &body("auto2", "3"));
    let o = mixsweep(&["plan"], &s2, &storage)
        .env("PATH", &path)
        .env("FAKE_GPU_MIB", "2048")
        .env("MIXSWEEP_CACHE", d.join("cache"))
        .output()
        .unwrap();
    assert!(
        text(&o).contains("trials_per_gpu: auto -> 3 per GPU on Fake GPU (cached calibration"),
        "{}",
        text(&o)
    );
    let o = run(&s2, "2048");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("calibrating"), "{out}");
    assert!(out.contains("3 per GPU"), "{out}");

    // A GPU too small for even one trial (512 MiB < context + peak): refused before any trial runs.
    let s3 = sweep(d, &body("auto3", "4"));
    let o = run(&s3, "512");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("would not fit on Fake GPU"), "{out}");
    assert!(out.contains("lower training.batch_tokens"), "{out}");
    for id in trial_ids(&storage, "auto3") {
        assert!(!storage.join(format!("trials/{id}/summary.json")).exists());
    }
}
