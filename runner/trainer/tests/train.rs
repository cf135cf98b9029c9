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
    // tok/s: the steady rate over the steps submitted after the first one finished
    let steady = s["tok_s_steps"].as_u64().unwrap();
    assert!((190..200).contains(&steady), "tok_s_steps {steady}");
    let (wall, first) = (
        s["wall_time_s"].as_f64().unwrap(),
        s["time_to_first_step_s"].as_f64().unwrap(),
    );
    assert!(
        first > 0.0 && first < wall,
        "first step at {first} s of {wall} s"
    );
    let phases = phase_names(&s);
    for p in [
        "device",
        "first_validation",
        "first_step_submit",
        "first_step_wait",
    ] {
        assert!(phases.contains(&p), "start-up phases {phases:?} lack {p}");
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
        .env("MIXSWEEP_TIMING", "1")
        .args(["train", "--device", "cpu", "--steps", "1", "--config"])
        .arg(root().join("examples/tiny.json"))
        .args(["--train", &train_glob(), "--out"])
        .arg(dir.path().join("again"))
        .arg("--safetensors-load")
        .arg(out.join("model.safetensors"))
        .output()
        .unwrap();
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert!(stderr(&o2).contains("start-up "), "{}", stderr(&o2));
    let s2 = read_json(&dir.path().join("again/summary.json"));
    // one step is too few for a steady rate: the figure covers the whole run, start-up included
    assert_eq!(s2["tok_s_steps"], 0);
    let tok_s = s2["mean_tok_s"].as_f64().unwrap();
    // at most the tokens over the time to the first step's end (without the exec phase, which
    // happens before the runner's clock starts)
    let exec = s2["startup"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "exec")
        .map(|p| p["seconds"].as_f64().unwrap())
        .sum::<f64>();
    let to_first = s2["time_to_first_step_s"].as_f64().unwrap() - exec;
    let bound = s2["tokens"].as_f64().unwrap() / to_first;
    assert!(
        tok_s > 0.0 && tok_s <= bound,
        "1-step run reports {tok_s} tok/s (bound {bound})"
    );
    let first = s2["final_train_loss"].as_f64().unwrap();
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

/// Interrupt a run, then `--resume` it: it continues from the step it stopped at with the same
/// weights and optimizer state, and every step's loss equals an uninterrupted run's.
#[test]
fn resume_continues_exactly_where_the_interrupted_run_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // Muon (the default) state, weight averaging and early-stop state all cross the interruption
    let cfg = config_from_example("tiny_mamba.json", dir.path(), "resumed", |v| {
        v["training"]["log_every"] = 1.into();
        v["training"]["val_every"] = 10.into();
        v["training"]["swa_start"] = 4.into();
        v["training"]["swa_interval"] = 3.into();
        v["training"]["swa_decay"] = 0.7.into();
        v["training"]["early_stop"] = serde_json::json!({"patience": 50, "min_delta": 0.5});
        v["dropout"] = serde_json::json!(0.1);
    });
    let steps = "60";
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut c = cpu_train(&cfg, out, steps);
        c.args(extra);
        c
    };
    let losses = |out: &std::path::Path| -> Vec<(u64, f64)> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Some((v["step"].as_u64()?, v["train_loss"].as_f64()?))
            })
            .collect()
    };
    // reference: one uninterrupted run
    let full = dir.path().join("full");
    let o = train(&full, &["--quiet"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // the same run, interrupted after a few steps
    let out = dir.path().join("cut");
    let mut child = train(&out, &["--progress-json", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("\"step\":8,") {
            break;
        }
    }
    unsafe { libc_kill(child.id() as i32, 2) };
    for _ in lines {}
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let cut = read_json(&out.join("summary.json"))["steps_completed"]
        .as_u64()
        .unwrap();
    assert!((9..60).contains(&cut), "stopped after {cut} steps");
    assert!(out.join("resume.safetensors").is_file());
    // resume: it starts at the step it stopped at and finishes the run
    let o = train(&out, &["--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("resuming at step {cut}/60")),
        "{}",
        stderr(&o)
    );
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "completed");
    assert_eq!(s["steps_completed"], 60);
    assert!(
        !out.join("resume.safetensors").exists(),
        "a finished run keeps no resume point"
    );
    let (want, got) = (losses(&full), losses(&out));
    assert_eq!(
        got.len(),
        want.len(),
        "one loss per step, none repeated or missing"
    );
    for ((ws, wl), (gs, gl)) in want.iter().zip(&got) {
        assert_eq!(ws, gs);
        assert!(
            (wl - gl).abs() <= 1e-5 * wl.abs().max(1.0),
            "step {ws}: {gl} vs {wl}"
        );
    }
    let whole = read_json(&full.join("summary.json"));
    assert_eq!(whole["best_val_loss"], s["best_val_loss"]);
    let (a, b) = (
        whole["swa_val_loss"].as_f64().unwrap(),
        s["swa_val_loss"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() <= 1e-5,
        "averaged weights after resuming: {b} vs {a}"
    );
    // a resume point of another config is refused with a clear error, not half-loaded
    let cut2 = dir.path().join("cut2");
    std::fs::create_dir_all(&cut2).unwrap();
    std::fs::write(cut2.join("resume.safetensors"), b"not safetensors").unwrap();
    let o = train(&cut2, &["--resume"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("resume.safetensors"), "{}", stderr(&o));
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

/// With MIXSWEEP_KERNEL_CACHE the runner points MLX at a private copy of the shared kernel folder
/// (created if missing) and removes the copy when it ends; complete modules stay in the shared folder.
#[test]
fn kernel_cache_is_adopted_into_a_private_copy_and_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("kernels");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let o = runner()
        .args(["smoke", "--device", "cpu"])
        .env("MIXSWEEP_KERNEL_CACHE", &shared)
        .env_remove("MLX_PTX_CACHE_DIR")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        shared
            .join(format!("mlx-{}", mixsweep_mlx::MLX_BUILD_VERSION))
            .is_dir(),
        "the shared folder (per MLX version) is created"
    );
    assert_eq!(mixsweep_mlx::MLX_BUILD_VERSION.split('.').count(), 3);
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("mixsweep-kernels-"))
        .collect();
    assert!(
        left.is_empty(),
        "private kernel copies left behind: {left:?}"
    );
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

/// The one-hot matmul embedding (small vocabularies) and the gather embedding train identically.
#[test]
fn embedding_matmul_equals_gather() {
    let dir = tempfile::tempdir().unwrap();
    let mut losses = vec![];
    for mode in ["gather", "matmul"] {
        let out = dir.path().join(mode);
        let o = runner()
            .env("MIXSWEEP_EMBEDDING", mode)
            .args(["train", "--device", "cpu", "--steps", "12", "--config"])
            .arg(root().join("examples/tiny.json"))
            .args(["--train", &train_glob(), "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let m = metrics(&out.join("metrics.jsonl"));
        let l: Vec<f64> = m
            .iter()
            .filter_map(|r| r.get("train_loss").and_then(|v| v.as_f64()))
            .collect();
        losses.push(l);
    }
    assert_eq!(losses[0].len(), losses[1].len());
    assert!(losses[0].len() >= 4);
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!(
            (a - b).abs() < 1e-4,
            "gather {:?} vs matmul {:?}",
            losses[0],
            losses[1]
        );
    }
}

/// Config, data and artifacts as storage URLs (file://; s3:// is covered by the orchestrator's s3 test),
/// with metrics records streamed as JSON lines on stdout.
#[test]
fn urls_for_config_data_and_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(bucket.join("data")).unwrap();
    for f in std::fs::read_dir(shakespeare()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bucket.join("data").join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(root().join("examples/tiny.json"), bucket.join("tiny.json")).unwrap();
    let url = |p: &str| format!("file://{}/{p}", bucket.display());
    let o = runner()
        .env("MIXSWEEP_CACHE", dir.path().join("cache"))
        .args([
            "train",
            "--device",
            "cpu",
            "--steps",
            "6",
            "--quiet",
            "--progress-json",
        ])
        .args([
            "--config",
            &url("tiny.json"),
            "--train",
            &url("data/train_*.bin"),
        ])
        .args(["--artifacts", &url("trials/abc")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout holds only JSON lines"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == 5 && l["train_loss"].is_number())
    );
    assert!(lines.iter().any(|l| l["val_loss"].is_number()));
    let trial = bucket.join("trials/abc");
    for f in [
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "summary.json",
    ] {
        assert!(trial.join(f).is_file(), "{f} uploaded");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(trial.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["status"], "completed");
    assert_eq!(s["steps_completed"], 6);

    // A config URL that does not exist is an input error.
    let o = runner()
        .args([
            "train",
            "--config",
            &url("missing.json"),
            "--train",
            &url("data/train_*.bin"),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such object"), "{}", stderr(&o));
}

/// BPE data end to end: prepare (BPE) -> train --eval -> eval; bits per byte equals
/// nats / ln 2 / bytes computed independently by decoding the validation tokens.
#[test]
fn bpe_prepare_train_and_bits_per_byte() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = std::fs::read_to_string(root().join("data/tinyshakespeare/input.txt"))
        .unwrap()
        .chars()
        .take(120_000)
        .collect();
    std::fs::write(dir.path().join("in.txt"), &text).unwrap();
    let data = dir.path().join("bpe");
    let o = runner()
        .args(["prepare", "--vocab-size", "320", "--quiet", "--input"])
        .arg(dir.path().join("in.txt"))
        .arg("--output")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "tokenizer.json",
        "mixlab.dataset.json",
        "bytes_per_token.bin",
        "train_00000.bin",
        "val_00000.bin",
    ] {
        assert!(data.join(f).is_file(), "{f}");
    }
    let config = config_from_example("tiny.json", dir.path(), "tiny_bpe", |v| {
        v["vocab_size"] = serde_json::json!(320);
    });
    let out = dir.path().join("run");
    let train_glob = format!("{}/train_*.bin", data.display());
    let o = runner()
        .args([
            "train", "--device", "cpu", "--steps", "30", "--eval", "--quiet", "--config",
        ])
        .arg(&config)
        .args(["--train", &train_glob, "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let bpb = summary["val_bpb"]
        .as_f64()
        .expect("val_bpb in summary.json");

    let o = runner()
        .args(["eval", "--device", "cpu", "--json", "--config"])
        .arg(&config)
        .arg("--safetensors-load")
        .arg(out.join("model.safetensors"))
        .args(["--train", &train_glob])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        (r["val_bpb"].as_f64().unwrap() - bpb).abs() < 1e-4,
        "{r} vs {bpb}"
    );
    // independently: decode the predicted validation tokens and count their UTF-8 bytes
    let tok = tokenizers::Tokenizer::from_file(data.join("tokenizer.json")).unwrap();
    let val = mixsweep_runner::data::read_shard(&data.join("val_00000.bin")).unwrap();
    let n = r["tokens"].as_u64().unwrap() as usize;
    assert_eq!(
        n,
        (val.len() - 1) / 64 * 64,
        "tokens used: floor((n-1)/T)*T with T=64"
    );
    let targets: Vec<u32> = val[1..=n].iter().map(|&t| t as u32).collect();
    let bytes = tok.decode(&targets, false).unwrap().len() as f64;
    let expected = r["val_loss"].as_f64().unwrap() * n as f64 / std::f64::consts::LN_2 / bytes;
    assert!(
        (r["val_bpb"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{r} vs {expected}"
    );
    assert!(bpb > 0.5 && bpb < 8.0, "{bpb}");

    // Missing lookup tables are a clear error, before any training.
    std::fs::remove_file(data.join("has_leading_space.bin")).unwrap();
    let o = runner()
        .args([
            "train", "--device", "cpu", "--steps", "2", "--eval", "--config",
        ])
        .arg(&config)
        .args(["--train", &train_glob])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("has_leading_space.bin"),
        "{}",
        stderr(&o)
    );
}

/// `generate` on trained weights: streams text, a seed gives the same text every time, and the
/// KV cache gives the same tokens as recomputing the sequence; Mamba decodes from its scan state.
#[test]
fn generation_is_deterministic_and_the_cache_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for example in ["tiny.json", "tiny_mamba.json"] {
        let out = dir.path().join(example);
        let o = runner()
            .args([
                "train", "--device", "cpu", "--steps", "40", "--quiet", "--config",
            ])
            .arg(root().join("examples").join(example))
            .args(["--train", &train_glob(), "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let generate = |extra: &[&str]| {
            let o = runner()
                .args(["generate", "--device", "cpu", "--config"])
                .arg(root().join("examples").join(example))
                .arg("--safetensors-load")
                .arg(out.join("model.safetensors"))
                .args([
                    "--prompt",
                    "ROMEO:",
                    "--max-tokens",
                    "150",
                    "--ids",
                    "--top-k",
                    "20",
                ])
                .args(extra)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let ids_line = text.lines().last().unwrap().to_string();
            let ids: Vec<u64> =
                serde_json::from_str::<serde_json::Value>(&ids_line).unwrap()["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
            (text, ids)
        };
        let (text_a, a) = generate(&["--seed", "5"]);
        let (_, b) = generate(&["--seed", "5"]);
        let (_, c) = generate(&["--seed", "5", "--no-cache"]);
        let (_, d) = generate(&["--seed", "6"]);
        // 150 tokens > 2 x seq_len 64: the context restarts twice, the same way with and without the cache
        assert_eq!(a.len(), 150);
        assert_eq!(a, b, "{example}: same seed, same tokens");
        assert_eq!(
            a, c,
            "{example}: the cache changes nothing, past seq_len too"
        );
        assert_ne!(a, d, "{example}: another seed, other tokens");
        // the streamed text is the decoded ids
        let ids: Vec<u32> = a.iter().map(|&t| t as u32).collect();
        let decoded = mixsweep_runner::generate::Codec::Bytes.decode(&ids);
        assert!(!decoded.is_empty());
        assert!(text_a.starts_with(&decoded), "{text_a:?} vs {decoded:?}");
    }
    // token ids as the prompt, longer than seq_len (its last seq_len tokens are the context)
    let long: Vec<String> = (0..100).map(|i| (65 + i % 26).to_string()).collect();
    let o = runner()
        .args(["generate", "--device", "cpu", "--config"])
        .arg(root().join("examples/tiny.json"))
        .arg("--safetensors-load")
        .arg(dir.path().join("tiny.json/model.safetensors"))
        .arg("--prompt")
        .arg(format!("token_ids:{}", long.join(",")))
        .args(["--max-tokens", "20", "--ids"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let last = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let ids = serde_json::from_str::<serde_json::Value>(&last).unwrap()["ids"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(ids, 20);
}

/// `MIXSWEEP_KERNEL_STORE`: a run uploads the kernels its machine has; a run on a fresh machine (an
/// empty local cache) downloads them before MLX starts, so it does not compile them again.
#[test]
fn kernel_store_gives_a_fresh_machine_the_compiled_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = format!("file://{}", store.display());
    let train = |name: &str, cache: Option<&std::path::Path>| {
        let mut cmd = cpu_train(
            &root().join("examples/tiny.json"),
            &dir.path().join(name),
            "2",
        );
        cmd.arg("--quiet")
            .env("MIXSWEEP_KERNEL_STORE", &url)
            .env_remove("MIXSWEEP_KERNEL_CACHE");
        if let Some(cache) = cache {
            cmd.env("MIXSWEEP_CACHE", cache);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        (
            read_json(&dir.path().join(name).join("summary.json")),
            stderr(&o),
        )
    };
    let platform = format!(
        "mlx-{}/cpu-{}-{}",
        mixsweep_mlx::MLX_BUILD_VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let stored = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(store.join(&platform))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // machine A (this machine's cache, which the other tests keep warm) uploads the kernels it has
    let (first, _) = train("a", None);
    assert_eq!(first["kernels_fetched"], 0, "the store starts empty");
    let uploaded = stored();
    assert!(
        uploaded.iter().any(|f| f.ends_with(".so")),
        "no kernels uploaded: {uploaded:?}"
    );
    // machine B starts with them: nothing to compile, nothing new to upload
    let fresh = dir.path().join("cache_b");
    let (second, err) = train("b", Some(&fresh));
    assert_eq!(second["kernels_fetched"], uploaded.len(), "{second}");
    assert!(
        !err.contains("compile MLX's CPU kernels"),
        "the fresh machine's cache was cold: {err}"
    );
    let phases = phase_names(&second);
    assert_eq!(phases[..2], ["exec", "kernel_fetch"], "{phases:?}");
    assert_eq!(stored(), uploaded);
    let local = fresh
        .join("mlx-kernels/local")
        .join(format!("mlx-{}", mixsweep_mlx::MLX_BUILD_VERSION))
        .join("cpu");
    for f in &uploaded {
        assert!(local.join(f).is_file(), "{f} not in {}", local.display());
    }
    assert_eq!(
        second["final_train_loss"], first["final_train_loss"],
        "the same run with downloaded kernels"
    );
}
