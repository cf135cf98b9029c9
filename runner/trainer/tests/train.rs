//! End-to-end tests of the `mixsweep-runner` binary on tiny Shakespeare (CPU).

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn tiny_learns_shakespeare_in_200_steps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = runner()
        .args(["train", "--device", "cpu", "--config"])
        .arg(root().join("examples/tiny.json"))
        .args(["--train", &train_glob(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "completed");
    assert_eq!(s["steps_completed"], 200);
    let ln256 = 256f64.ln();
    let final_train = s["final_train_loss"].as_f64().unwrap();
    let best_val = s["best_val_loss"].as_f64().unwrap();
    assert!(
        final_train < ln256 - 2.5,
        "final train loss {final_train} not well below ln(256)={ln256:.3}"
    );
    assert!(best_val < ln256 - 2.5, "best val loss {best_val}");
    for key in [
        "params",
        "flops_per_token",
        "mean_tok_s",
        "wall_time_s",
        "peak_memory_bytes",
        "device",
        "mlx_version",
        "config_hash",
    ] {
        assert!(!s[key].is_null(), "summary.json lacks {key}");
    }
    let m = metrics(&out.join("metrics.jsonl"));
    assert_eq!(m.first().unwrap()["step"], 0);
    assert!(m.iter().any(|r| r.get("val_loss").is_some()));
    for r in m.iter().filter(|r| r.get("train_loss").is_some()) {
        for key in ["lr", "tokens", "tok_s", "elapsed_s", "grad_norm"] {
            assert!(r.get(key).is_some(), "metrics record lacks {key}: {r}");
        }
    }
    assert!(out.join("model.safetensors").is_file());
    let text = stdout(&o);
    assert!(
        text.contains("[tiny] step 100/200 loss="),
        "progress lines missing:\n{text}"
    );

    // Continuing from the exported weights starts where the first run ended, not from scratch.
    let o2 = runner()
        .args(["train", "--device", "cpu", "--steps", "1", "--config"])
        .arg(root().join("examples/tiny.json"))
        .args(["--train", &train_glob(), "--out"])
        .arg(dir.path().join("again"))
        .arg("--safetensors-load")
        .arg(out.join("model.safetensors"))
        .output()
        .unwrap();
    assert!(o2.status.success(), "{}", stderr(&o2));
    let first = read_json(&dir.path().join("again/summary.json"))["final_train_loss"]
        .as_f64()
        .unwrap();
    assert!(
        first < 3.0,
        "loss of loaded weights {first} looks like a fresh init"
    );
}

#[test]
fn tiny_mamba_learns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = runner()
        .args(["train", "--device", "cpu", "--steps", "80", "--config"])
        .arg(root().join("examples/tiny_mamba.json"))
        .args(["--train", &train_glob(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out.join("metrics.jsonl"));
    let losses: Vec<f64> = m
        .iter()
        .filter_map(|r| r.get("train_loss").and_then(|v| v.as_f64()))
        .collect();
    assert!(
        losses[0] > 5.0 && *losses.last().unwrap() < 3.2,
        "mamba losses {losses:?}"
    );
}

#[test]
fn config_errors_exit_2_and_name_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), "bad", |v| {
        v["blocks"][0]["kv_heads"] = 3.into()
    });
    let o = runner()
        .args(["train", "--train", &train_glob(), "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("bad.json: blocks[0].kv_heads: kv_heads=3 must divide heads=4"),
        "{e}"
    );
    let o = runner()
        .args(["count", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn data_errors_exit_2_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let small_vocab = config_from_example("tiny.json", dir.path(), "v64", |v| {
        v["vocab_size"] = 64.into()
    });
    let o = runner()
        .args(["train", "--train", &train_glob(), "--config"])
        .arg(&small_vocab)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is >= vocab_size 64") && stderr(&o).contains("at least"),
        "{}",
        stderr(&o)
    );
    let o = runner()
        .args(["train", "--train", "/nonexistent/train_*.bin", "--config"])
        .arg(root().join("examples/tiny.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("matches no files"), "{}", stderr(&o));
}

#[test]
fn divergence_stops_with_status_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), "hot", |v| {
        let t = &mut v["training"];
        t["lr"] = 1e6.into();
        t["grad_clip"] = 0.into();
        t["warmup_steps"] = 0.into();
        t["hold_steps"] = 1000.into();
        t["log_every"] = 1.into();
    });
    let out = dir.path().join("run");
    let o = runner()
        .args([
            "train",
            "--device",
            "cpu",
            "--steps",
            "50",
            "--train",
            &train_glob(),
            "--config",
        ])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("diverged"), "{}", stderr(&o));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "diverged");
    assert!(s["steps_completed"].as_u64().unwrap() < 50);
}

#[test]
fn interrupt_keeps_weights_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), "long", |v| {
        v["training"]["log_every"] = 1.into()
    });
    let out = dir.path().join("run");
    let mut child = runner()
        .args([
            "train",
            "--device",
            "cpu",
            "--steps",
            "100000",
            "--train",
            &train_glob(),
            "--config",
        ])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // wait until a few steps have run
    for line in lines.by_ref() {
        if line.unwrap().contains("step 4/") {
            break;
        }
    }
    unsafe { libc_kill(child.id() as i32, 2) };
    for _ in lines {}
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "interrupted");
    assert!(s["steps_completed"].as_u64().unwrap() >= 5);
    assert!(out.join("model.safetensors").is_file());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn count_reports_params_and_flops() {
    let o = runner()
        .args(["count", "--config"])
        .arg(root().join("examples/nanogpt_shakespeare.json"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("Total parameters: 10816128"), "{text}");
    assert!(
        text.contains("Number of blocks: 6") && text.contains("FLOPs per token: 71.37 MFLOP"),
        "{text}"
    );
}

#[test]
fn smoke_runs_a_compiled_step() {
    let o = runner()
        .args(["smoke", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("All checks passed"));
}

#[test]
fn cpuprofile_is_a_pprof_protobuf_with_samples() {
    use pprof::protos::Message;
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("cpu.pb");
    let o = runner()
        .args([
            "train", "--device", "cpu", "--steps", "15", "--quiet", "--config",
        ])
        .arg(root().join("examples/tiny.json"))
        .args(["--train", &train_glob(), "--out"])
        .arg(dir.path().join("run"))
        .arg("--cpuprofile")
        .arg(&prof)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let p = pprof::protos::Profile::decode(std::fs::read(&prof).unwrap().as_slice()).unwrap();
    assert!(!p.sample.is_empty(), "no samples in the profile");
    assert!(
        p.string_table.iter().any(|s| s.contains("mixsweep")),
        "no mixsweep frames in the profile"
    );
}
