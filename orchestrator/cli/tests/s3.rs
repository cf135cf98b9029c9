//! `mixsweep run` against a real S3-compatible server: s3s-fs (the `s3s` project's file-system-backed
//! S3 server) in this test process on a loopback port, reached through object_store's S3 client, and
//! through its GCS client (object_store speaks GCS's XML API, which takes S3's path-style requests).

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::*;

/// Starts s3s-fs over `dir` (bucket `test-bucket`) on a free loopback port; returns the endpoint URL.
fn start_s3(dir: &Path) -> String {
    start_server(dir, true)
}

/// The same server; without `auth` it takes unsigned requests (the GCS client with OAuth disabled).
fn start_server(dir: &Path, auth: bool) -> String {
    std::fs::create_dir_all(dir.join("test-bucket")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let fs_root = dir.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut b =
                s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&fs_root).unwrap());
            if auth {
                b.set_auth(s3s::auth::SimpleAuth::from_single("testing", "testing"));
            }
            let service = b.build();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let svc = service.clone();
                // GCS clients send `Authorization: Bearer ...` (empty with OAuth disabled), which an
                // S3 server reads as a malformed signature: drop it for the unsigned server.
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let svc = svc.clone();
                        async move {
                            let bearer = req
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v.as_bytes().starts_with(b"Bearer"));
                            if bearer && !auth {
                                req.headers_mut().remove("authorization");
                            }
                            hyper::service::Service::call(&svc, req).await
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
                });
            }
        });
    });
    format!("http://{addr}")
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
