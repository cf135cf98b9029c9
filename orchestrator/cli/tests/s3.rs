//! `mixsweep run` against a real S3-compatible server: s3s-fs (the `s3s` project's file-system-backed
//! S3 server) in this test process on a loopback port, reached through object_store's S3 client, and
//! through its GCS client (object_store speaks GCS's XML API, which takes S3's path-style requests).

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::*;

#[path = "support/s3server.rs"]
mod s3server;
use s3server::S3Server;

/// Starts s3s-fs over `dir` (bucket `test-bucket`) for the whole test; returns the endpoint URL.
fn start_s3(dir: &Path) -> String {
    start_server(dir, true)
}

fn start_server(dir: &Path, auth: bool) -> String {
    let server = S3Server::start(dir, auth);
    let endpoint = server.endpoint.clone();
    std::mem::forget(server); // serves until the test process ends
    endpoint
}

fn mixsweep(endpoint: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("MIXSWEEP_RUNNER", runner());
    c
}

#[test]
fn sweep_artifacts_land_in_s3_and_state_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&dir.path().join("s3"));
    prepare_bytes(&dir.path().join("data"));
    std::fs::copy(
        root().join("examples/tiny.json"),
        dir.path().join("tiny.json"),
    )
    .unwrap();
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(&sweep, "name: s3sweep\nbase: tiny.json\ngrid: {training.lr: [0.001, 0.003]}\nsteps: 20\ntrain: data/train_*.bin\n").unwrap();
    let storage = "s3://test-bucket/team/runs";

    let o = mixsweep(&endpoint)
        .arg("run")
        .arg(&sweep)
        .args(["--storage", storage])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.ends_with(" done"))
            .count(),
        2
    );

    // The objects are in the bucket, under the prefix, with the documented layout.
    let base = dir.path().join("s3/test-bucket/team/runs");
    assert!(base.join("sweeps/s3sweep/sweep.yaml").is_file());
    let ids = trial_ids(&base, "s3sweep");
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(base.join(format!("trials/{id}/summary.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(s["status"], "completed");
        assert!(
            base.join(format!("trials/{id}/model.safetensors"))
                .is_file()
        );
    }

    // State comes from storage alone: plan (as from another machine) sees both done, and run caches.
    let plan = mixsweep(&endpoint)
        .arg("plan")
        .arg(&sweep)
        .args(["--storage", storage])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plan.stdout)
            .lines()
            .filter(|l| l.ends_with(" done"))
            .count(),
        2
    );
    let again = mixsweep(&endpoint)
        .arg("run")
        .arg(&sweep)
        .args(["--storage", storage])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("2 trials, 0 to run, 2 cached"));

    // Training data from the bucket: the runner lists s3://.../train_*.bin, downloads the shards into
    // its cache once, and finds the validation shards by the train -> val rule on the URL.
    let bucket_data = dir.path().join("s3/test-bucket/datasets/sh");
    std::fs::create_dir_all(&bucket_data).unwrap();
    for f in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bucket_data.join(f.file_name().unwrap())).unwrap();
    }
    let remote = dir.path().join("remote.yaml");
    std::fs::write(&remote, "name: s3data\nbase: tiny.json\nsteps: 20\ntrain: s3://test-bucket/datasets/sh/train_*.bin\n").unwrap();
    let cache = dir.path().join("cache");
    let o = mixsweep(&endpoint)
        .env("MIXSWEEP_CACHE", &cache)
        .arg("run")
        .arg(&remote)
        .args(["--storage", storage])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.ends_with(" done"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("one done trial in the table (rank, trial, ...)")
        .to_string();
    let s: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(base.join(format!("trials/{id}/summary.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(s["status"], "completed");
    assert!(
        s["best_val_loss"].as_f64().is_some(),
        "validation shards came from the bucket too: {s}"
    );
    let cached: Vec<_> = walk(&cache.join("data"));
    assert!(
        cached.iter().any(|p| p.ends_with("train_00000.bin")),
        "{cached:?}"
    );
    assert!(
        cached.iter().any(|p| p.ends_with("val_00000.bin")),
        "{cached:?}"
    );

    // A URL that matches nothing is a data error (exit 2 from the runner), not retried.
    std::fs::write(&remote, "name: s3none\nbase: tiny.json\nsteps: 5\nretries: 3\ntrain: s3://test-bucket/datasets/sh/nothing_*.bin\n").unwrap();
    let o = mixsweep(&endpoint)
        .env("MIXSWEEP_CACHE", &cache)
        .arg("run")
        .arg(&remote)
        .args(["--storage", storage])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("matches no"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn storage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.json"), "{\"model_dim\": 8, \"vocab_size\": 16, \"seq_len\": 4, \"blocks\": [{\"type\": \"swiglu\"}], \"training\": {\"batch_tokens\": 8}}").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let mut shard = vec![0u8; 1024];
    shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
    shard[4..8].copy_from_slice(&1i32.to_le_bytes());
    shard[8..12].copy_from_slice(&16i32.to_le_bytes());
    shard.extend((0..16u16).flat_map(|t| t.to_le_bytes()));
    std::fs::write(dir.path().join("d/train_0.bin"), &shard).unwrap();
    let sweep = dir.path().join("s.yaml");
    std::fs::write(&sweep, "name: x\nbase: m.json\ntrain: d/train_*.bin\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mixsweep"))
        .arg("run")
        .arg(&sweep)
        .args(["--storage", "ftp://host/x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown storage scheme ftp://"));
}

/// gs:// storage through object_store's real GCS client (XML API, OAuth disabled via the service
/// account key's `disable_oauth`, base URL pointed at the local server): a sweep's artifacts land in
/// the bucket and its state is read back.
#[test]
fn gs_storage_goes_through_the_gcs_client() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = start_server(&dir.path().join("gcs"), false);
    let runner = runner();
    prepare_bytes(&dir.path().join("data"));
    std::fs::copy(
        root().join("examples/tiny.json"),
        dir.path().join("tiny.json"),
    )
    .unwrap();
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(
        &sweep,
        "name: gcssweep\nbase: tiny.json\nsteps: 10\ntrain: data/train_*.bin\n",
    )
    .unwrap();
    let key = serde_json::json!({
        "gcs_base_url": endpoint,
        "disable_oauth": true,
        "client_email": "",
        "private_key": "",
        "private_key_id": ""
    })
    .to_string();
    let gcs = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
        c.env("GOOGLE_SERVICE_ACCOUNT_KEY", &key)
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GOOGLE_SERVICE_ACCOUNT")
            .env("MIXSWEEP_RUNNER", &runner)
            .arg("run")
            .arg(&sweep)
            .args(["--storage", "gs://test-bucket/gcs/runs"]);
        c
    };
    let o = gcs().output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let base = dir.path().join("gcs/test-bucket/gcs/runs");
    let id = trial_ids(&base, "gcssweep")[0].clone();
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(base.join(format!("trials/{id}/summary.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["status"], "completed");
    assert!(
        base.join(format!("trials/{id}/model.safetensors"))
            .is_file()
    );
    // state read back through the GCS client's listing
    let again = gcs().output().unwrap();
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("1 trials, 0 to run, 1 cached"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // training data from gs:// too (listed, downloaded into the cache; val by the train -> val rule)
    let bucket_data = dir.path().join("gcs/test-bucket/datasets/sh");
    std::fs::create_dir_all(&bucket_data).unwrap();
    for f in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bucket_data.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        &sweep,
        "name: gcsdata\nbase: tiny.json\nsteps: 10\ntrain: gs://test-bucket/datasets/sh/train_*.bin\n",
    )
    .unwrap();
    let o = gcs()
        .env("MIXSWEEP_CACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let cached = walk(&dir.path().join("cache/data"));
    assert!(
        cached.iter().any(|p| p.ends_with("val_00000.bin")),
        "{cached:?}"
    );
}

/// S3 goes down while a trial trains: the finished trial's results stay in its work folder (its
/// upload gives up only after MIXSWEEP_STORAGE_TIMEOUT), the queued trial is not started (nor
/// recorded as failed), and the next run stores the kept results without training the trial again.
#[test]
fn storage_down_mid_sweep_keeps_finished_results_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(&dir.path().join("s3"), true);
    prepare_bytes(&dir.path().join("data"));
    std::fs::copy(
        root().join("examples/tiny.json"),
        dir.path().join("tiny.json"),
    )
    .unwrap();
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(
        &sweep,
        "name: outage\nbase: tiny.json\nzip: {training.steps: [150, 20]}\nmax_parallel: 1\ntrain: data/train_*.bin\n",
    )
    .unwrap();
    let storage = "s3://test-bucket/runs";
    let work = dir.path().join("work");
    let endpoint = server.endpoint.clone();
    let run = || {
        let mut c = mixsweep(&endpoint);
        c.arg("run")
            .arg(&sweep)
            .args(["--storage", storage])
            .env("MIXSWEEP_WORK_DIR", &work)
            .env("MIXSWEEP_STORAGE_TIMEOUT", "3");
        c
    };
    let child = run()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(120, || !find(&work, "runner.pid").is_empty()),
        "the first trial never started"
    );
    let t0 = std::time::Instant::now();
    server.stop();
    let mut child = child;
    let errpipe = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for l in std::io::BufReader::new(errpipe).lines() {
            let l = l.unwrap();
            eprintln!("[{:>6.1}s] {l}", t0.elapsed().as_secs_f64());
            all += &l;
            all.push('\n');
        }
        all
    });
    let mut o = child.wait_with_output().unwrap();
    o.stderr = lines.join().unwrap().into_bytes();
    eprintln!("first run ended {:?} after the outage began", t0.elapsed());
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err.contains("failed") && err.contains("kept in") && err.contains("not started"),
        "{err}"
    );
    let base = dir.path().join("s3/test-bucket/runs");
    let ids = trial_ids(&base, "outage");
    assert!(
        !base
            .join(format!("trials/{}/summary.json", ids[0]))
            .exists()
    );
    assert!(
        !base
            .join(format!("trials/{}/attempt.json", ids[1]))
            .exists(),
        "the queued trial must not be recorded as failed"
    );
    let kept = find(&work, "summary.json");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_summary = json(&kept[0]);
    assert_eq!(kept_summary["status"], "completed");

    server.restart();
    let t0 = std::time::Instant::now();
    let o = run().output().unwrap();
    eprintln!("second run took {:?}", t0.elapsed());
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stored the kept results of 1 trial(s)"),
        "{err}"
    );
    assert!(err.contains("2 trials, 1 to run, 1 cached"), "{err}");
    let stored = json(&base.join(format!("trials/{}/summary.json", ids[0])));
    assert_eq!(
        stored["wall_time_s"], kept_summary["wall_time_s"],
        "the finished trial was trained again"
    );
    assert_eq!(
        json(&base.join(format!("trials/{}/summary.json", ids[1])))["status"],
        "completed"
    );
    assert!(
        find(&work, "summary.json").is_empty(),
        "kept folder not cleaned up"
    );
}
