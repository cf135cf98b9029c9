//! End-to-end tests of the trainer's run control: the optimizer named everywhere, early stopping,
//! weight averaging (SWA/EMA) and multi-phase schedules (CPU, tiny model, short runs).

mod common;
use common::*;
use std::path::Path;

fn tiny(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    config_from_example("tiny.json", dir, name, edit)
}

fn train(cfg: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let o = runner()
        .args(["train", "--device", "cpu", "--config"])
        .arg(cfg)
        .args(["--train", &train_glob(), "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    o
}

#[test]
fn mixlabs_default_muon_is_named_in_header_summary_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "default_opt", |v| {
        v["training"]["steps"] = 3.into();
    });
    let out = dir.path().join("run");
    let o = train(&cfg, &out, &[]);
    let text = stdout(&o);
    assert!(
        text.contains("optimizer: muon (matrix), adamw (embed, head, scalar) [mixlab's default"),
        "{text}"
    );
    assert_eq!(
        read_json(&out.join("summary.json"))["optimizer"],
        "muon (matrix), adamw (embed, head, scalar)"
    );
    let c = runner()
        .args(["count", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = stdout(&c);
    let line = text
        .lines()
        .find(|l| l.starts_with("Optimizer:"))
        .unwrap_or_else(|| panic!("{text}"));
    // tiny (D 64, FFN 128, V 256): Muon trains wq, wk, wv, wo (4·64·64), ff1, ff2 (2·64·128) and
    // the swiglu's three 64x128 matrices = 57344; AdamW embed and head (2·256·64) and three norms (3·64)
    assert!(line.contains("muon (matrix), adamw (embed, head, scalar) (adamw 32960 params, muon 57344 params, mixlab's default)"), "{line}");
    let explicit = tiny(dir.path(), "adamw", |v| {
        v["training"]["optimizer"] = "adamw".into()
    });
    let c = runner()
        .args(["count", "--config"])
        .arg(&explicit)
        .output()
        .unwrap();
    assert!(
        stdout(&c).contains("Optimizer: adamw (all groups) (adamw 90304 params)"),
        "{}",
        stdout(&c)
    );
}

#[test]
fn early_stop_ends_at_the_first_qualifying_validation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "early", |v| {
        let t = &mut v["training"];
        t["steps"] = 200.into();
        t["val_every"] = 5.into();
        t["log_every"] = 5.into();
        t["target_val_loss"] = 3.5.into();
    });
    let out = dir.path().join("run");
    train(&cfg, &out, &[]);
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["status"], "completed");
    let done = s["steps_completed"].as_u64().unwrap();
    assert!(
        done < 200 && done.is_multiple_of(5),
        "stopped at a validation: {done}"
    );
    let reason = s["stop_reason"].as_str().unwrap();
    assert!(reason.starts_with("target_val_loss reached"), "{reason}");
    let vals: Vec<(u64, f64)> = metrics(&out.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("val_loss")?.as_f64()?)))
        .collect();
    let (last_step, last) = *vals.last().unwrap();
    assert_eq!(
        last_step, done,
        "the stopping validation is the last record"
    );
    assert!(
        last <= 3.5 && vals[..vals.len() - 1].iter().all(|(_, v)| *v > 3.5),
        "first qualifying: {vals:?}"
    );
    assert_eq!(s["final_val_loss"].as_f64().unwrap(), last);
}

#[test]
fn averaged_weights_are_exported_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "swa", |v| {
        let t = &mut v["training"];
        t["steps"] = 30.into();
        t["swa_start"] = 10.into();
        t["swa_interval"] = 5.into();
        t["swa_decay"] = 0.5.into();
    });
    let out = dir.path().join("run");
    let o = train(&cfg, &out, &["--eval"]);
    assert!(
        stdout(&o).contains("averaged weights (SWA/EMA): val="),
        "{}",
        stdout(&o)
    );
    let s = read_json(&out.join("summary.json"));
    let (swa, live) = (
        s["swa_val_loss"].as_f64().unwrap(),
        s["final_val_loss"].as_f64().unwrap(),
    );
    assert!(swa.is_finite() && swa != live, "swa {swa} vs live {live}");
    let swa_file = out.join("model.swa.safetensors");
    assert!(swa_file.is_file());
    // the exported average evaluates to the full validation loss the run reported for it
    let e = runner()
        .args(["eval", "--device", "cpu", "--config"])
        .arg(&cfg)
        .arg("--safetensors-load")
        .arg(&swa_file)
        .args(["--train", &train_glob(), "--json"])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", stderr(&e));
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    let reported = s["swa_full_val_loss"].as_f64().unwrap();
    assert!(
        (r["val_loss"].as_f64().unwrap() - reported).abs() < 1e-6,
        "{r} vs {reported}"
    );
    assert_ne!(reported, s["full_val_loss"].as_f64().unwrap());
}

#[test]
fn phases_set_the_learning_rate_and_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "phases", |v| {
        let t = v["training"].as_object_mut().unwrap();
        t.remove("steps");
        t.insert("log_every".into(), 1.into());
        t.insert("phases".into(), serde_json::json!([{"steps": 4, "lr": 0.002, "label": "fast"}, {"steps": 3, "lr": 0.0005}]));
    });
    let out = dir.path().join("run");
    let o = train(&cfg, &out, &[]);
    assert!(stdout(&o).contains("phase=fast"), "{}", stdout(&o));
    let lrs: Vec<f64> = metrics(&out.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| r["lr"].as_f64())
        .collect();
    assert_eq!(
        lrs,
        vec![0.002, 0.002, 0.002, 0.002, 0.0005, 0.0005, 0.0005]
    );
    assert_eq!(read_json(&out.join("summary.json"))["steps_completed"], 7);
}

#[test]
fn quantized_export_evaluates_like_its_in_memory_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "quant", |v| v["training"]["steps"] = 30.into());
    let out = dir.path().join("run");
    let o = train(&cfg, &out, &["--quantize", "int8"]);
    assert!(
        stdout(&o).contains("exported quantized (int8 quantile) safetensors"),
        "{}",
        stdout(&o)
    );
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["quantize"], "int8 quantile");
    let (q, live) = (
        s["quant_val_loss"].as_f64().unwrap(),
        s["final_val_loss"].as_f64().unwrap(),
    );
    assert!(
        q != live && (q - live).abs() < 0.05,
        "int8 costs little: {q} vs {live}"
    );
    let (int8, f32) = (
        out.join("model.int8.safetensors"),
        out.join("model.safetensors"),
    );
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    assert!(
        size(&int8) < 0.4 * size(&f32),
        "{} vs {}",
        size(&int8),
        size(&f32)
    );
    let eval = |weights: &Path, extra: &[&str]| -> f64 {
        let e = runner()
            .args(["eval", "--device", "cpu", "--json", "--config"])
            .arg(&cfg)
            .arg("--safetensors-load")
            .arg(weights)
            .args(["--train", &train_glob()])
            .args(extra)
            .output()
            .unwrap();
        assert!(e.status.success(), "{}", stderr(&e));
        serde_json::from_str::<serde_json::Value>(&stdout(&e)).unwrap()["val_loss"]
            .as_f64()
            .unwrap()
    };
    let from_file = eval(&int8, &[]);
    let in_memory = eval(&f32, &["--quantize", "int8"]);
    assert!(
        (from_file - in_memory).abs() < 1e-6,
        "{from_file} vs {in_memory}"
    );
    assert!(
        (from_file - eval(&f32, &[])).abs() > 1e-6,
        "quantization changes the weights"
    );
}

#[test]
fn a_killed_run_resumes_from_its_last_periodic_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(dir.path(), "ckpt", |v| v["training"]["steps"] = 40.into());
    let (out, ckpt) = (dir.path().join("run"), dir.path().join("ckpt"));
    let run = |extra: &[&str]| {
        let mut c = runner();
        c.args([
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--checkpoint-every",
            "5",
            "--config",
        ])
        .arg(&cfg)
        .args(["--train", &train_glob(), "--out"])
        .arg(&out)
        .arg("--checkpoint-dir")
        .arg(&ckpt)
        .args(extra);
        c
    };
    let mut child = run(&[]).spawn().unwrap();
    let tenth = ckpt.join("step_000010.safetensors");
    let t0 = std::time::Instant::now();
    while !tenth.exists() {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs, no summary is written
    child.wait().unwrap();
    assert!(ckpt.join("step_000005.safetensors").is_file());
    let o = run(&["--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let at: usize = err
        .split("resuming at step ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        at >= 10 && at.is_multiple_of(5),
        "resumed from a checkpoint: {at}"
    );
    let s = read_json(&out.join("summary.json"));
    assert_eq!(
        (s["status"].as_str(), s["steps_completed"].as_u64()),
        (Some("completed"), Some(40))
    );
    assert!(ckpt.join("step_000040.safetensors").is_file());
}

#[test]
fn test_time_training_adapts_a_copy_during_full_validation() {
    let dir = tempfile::tempdir().unwrap();
    let plain = tiny(dir.path(), "plain", |v| v["training"]["steps"] = 30.into());
    let ttt = tiny(dir.path(), "ttt", |v| {
        v["training"]["steps"] = 30.into();
        v["training"]["ttt_steps"] = 2.into();
        v["training"]["ttt_lr"] = 1e-3.into();
    });
    let out = dir.path().join("run");
    train(&ttt, &out, &["--eval"]);
    let s = read_json(&out.join("summary.json"));
    assert_eq!(s["ttt"], "score-first steps=2 lr=0.001");
    let eval = |cfg: &Path| -> f64 {
        let e = runner()
            .args(["eval", "--device", "cpu", "--json", "--config"])
            .arg(cfg)
            .arg("--safetensors-load")
            .arg(out.join("model.safetensors"))
            .args(["--train", &train_glob()])
            .output()
            .unwrap();
        assert!(e.status.success(), "{}", stderr(&e));
        serde_json::from_str::<serde_json::Value>(&stdout(&e)).unwrap()["val_loss"]
            .as_f64()
            .unwrap()
    };
    let (without, with) = (eval(&plain), eval(&ttt));
    assert!(
        with < without,
        "adapting on each scored batch helps the next: {with} vs {without}"
    );
    // the exported weights are the trained ones, not the adapted copy: a run without TTT writes the same
    let plain_out = dir.path().join("plain_run");
    train(&plain, &plain_out, &["--eval"]);
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap().len(),
        std::fs::read(plain_out.join("model.safetensors"))
            .unwrap()
            .len()
    );
    let weights = |d: &Path| {
        mixsweep_runner::checkpoint::load(
            &d.join("model.safetensors"),
            &mixsweep_model::ModelConfig::load(&plain)
                .unwrap()
                .lower()
                .weights,
        )
        .unwrap()
    };
    assert_eq!(weights(&out), weights(&plain_out));
    let p = read_json(&plain_out.join("summary.json"));
    assert!(s["full_val_loss"].as_f64().unwrap() < p["full_val_loss"].as_f64().unwrap());
}

#[test]
fn hiddenstats_writes_the_normalised_hidden_state_of_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    // one step at warmup's lr 0 leaves the initial weights: the final norm's scale is 1
    let cfg = tiny(dir.path(), "hidden", |v| v["training"]["steps"] = 1.into());
    let out = dir.path().join("run");
    train(&cfg, &out, &[]);
    let file = dir.path().join("hidden.f32");
    let o = runner()
        .args(["hiddenstats", "--device", "cpu", "--config"])
        .arg(&cfg)
        .arg("--safetensors-load")
        .arg(out.join("model.safetensors"))
        .args(["--train", &train_glob(), "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("hidden state dims: [16, 64, 64]"),
        "{}",
        stdout(&o)
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 16 * 64 * 64 * 4);
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for row in v.chunks(64) {
        let ms = row.iter().map(|x| x * x).sum::<f32>() / 64.0;
        assert!(
            (ms - 1.0).abs() < 1e-3,
            "each position is RMS-normalised: {ms}"
        );
    }
}

#[test]
fn z_loss_joins_the_training_objective() {
    let dir = tempfile::tempdir().unwrap();
    let losses = |name: &str, z: f64| -> Vec<f64> {
        let cfg = tiny(dir.path(), name, |v| {
            v["training"]["steps"] = 3.into();
            v["training"]["log_every"] = 1.into();
            v["training"]["z_loss"] = z.into();
        });
        let out = dir.path().join(name);
        train(&cfg, &out, &[]);
        metrics(&out.join("metrics.jsonl"))
            .iter()
            .filter_map(|r| r["train_loss"].as_f64())
            .collect()
    };
    let (plain, z) = (losses("noz", 0.0), losses("z", 1e-2));
    // step 0 (lr 0): the same weights, so the difference is the z term, 1e-2 · lse², lse ≈ ln 256
    // logsumexp >= ln V, and near it for small initial logits
    let (lo, hi) = (
        1e-2 * 256f64.ln().powi(2),
        1e-2 * (256f64.ln() + 0.5).powi(2),
    );
    let d = z[0] - plain[0];
    assert!(lo * 0.99 <= d && d <= hi, "z term {d} not in [{lo}, {hi}]");
}

#[test]
fn quantization_aware_training_fakes_int8_weights_from_qat_start() {
    let dir = tempfile::tempdir().unwrap();
    let losses = |name: &str, qat: serde_json::Value| -> Vec<f64> {
        let cfg = tiny(dir.path(), name, |v| {
            let t = &mut v["training"];
            t["steps"] = 4.into();
            t["log_every"] = 1.into();
            t["warmup_steps"] = 1.into();
            if !qat.is_null() {
                t["qat"] = "int8".into();
                t["qat_start"] = qat;
            }
        });
        let out = dir.path().join(name);
        train(&cfg, &out, &[]);
        metrics(&out.join("metrics.jsonl"))
            .iter()
            .filter_map(|r| r["train_loss"].as_f64())
            .collect()
    };
    let (plain, late) = (
        losses("float", serde_json::Value::Null),
        losses("qat2", 2.into()),
    );
    // identical weights and batches: the forward passes agree until qat_start, then see int8 weights
    assert_eq!(plain[..2], late[..2]);
    assert!(
        plain[2] != late[2] && (plain[2] - late[2]).abs() < 0.05,
        "{plain:?} vs {late:?}"
    );
}
