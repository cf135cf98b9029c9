//! Parity with an independent MLX-Python implementation (runner/tests/reference/reference.py):
//! same initial weights (safetensors), same batches, per-step training loss within 1e-4 over 20
//! AdamW steps. One case per group of model features that change the forward pass; the 20 steps
//! also check their gradients (a wrong backward pass drifts the losses apart within a few steps).

mod common;
use common::*;
use mixsweep_model::ModelConfig;
use mixsweep_runner::data::{TokenStream, expand_glob, train_batch};
use std::io::Write;
use std::process::Command;

fn parity(example: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let dir = tempfile::tempdir().unwrap();
    let steps = 20usize;
    let cfg_path = config_from_example(example, dir.path(), "parity", |v| {
        edit(v);
        let t = v["training"].as_object_mut().unwrap();
        t.insert("steps".into(), steps.into());
        t.insert("warmup_steps".into(), 5.into());
        t.insert("hold_steps".into(), 5.into());
        t.insert("log_every".into(), 1.into());
        t.insert("val_every".into(), 0.into());
    });
    let cfg = ModelConfig::load(&cfg_path).unwrap();
    let program = cfg.lower();

    // Initial weights, written once and read by both implementations.
    let init = dir.path().join("init.safetensors");
    let host = mixsweep_runner::init::initial_weights(&program.weights, 7);
    mixsweep_runner::checkpoint::save(&init, &program.weights, &host, Default::default()).unwrap();

    // The batches the runner draws for steps 0..steps.
    let stream =
        TokenStream::load(expand_glob(&train_glob(), "train").unwrap(), cfg.vocab_size).unwrap();
    let rows = cfg.training.batch_size(cfg.seq_len);
    let batches = dir.path().join("batches.bin");
    let mut f = std::fs::File::create(&batches).unwrap();
    for s in 0..steps {
        let b = train_batch(&stream, cfg.training.seed, s, rows, cfg.seq_len);
        for v in b.tokens.iter().chain(&b.targets) {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    drop(f);

    let out = dir.path().join("run");
    let o = runner()
        .args(["train", "--device", "cpu", "--config"])
        .arg(&cfg_path)
        .args(["--train", &train_glob(), "--out"])
        .arg(&out)
        .arg("--safetensors-load")
        .arg(&init)
        .output()
        .unwrap();
    assert!(o.status.success(), "runner failed: {}", stderr(&o));
    let ours: Vec<f64> = metrics(&out.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| r.get("train_loss").and_then(|l| l.as_f64()))
        .collect();
    assert_eq!(ours.len(), steps);

    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let r = Command::new(&python)
        .arg(root().join("runner/tests/reference/reference.py"))
        .arg(&cfg_path)
        .arg(&init)
        .arg(&batches)
        .arg(steps.to_string())
        .output()
        .expect("python3 with the mlx package is needed (pip install mlx==0.32.2 mlx-cpu==0.32.2)");
    assert!(r.status.success(), "reference failed: {}", stderr(&r));
    let reference: Vec<f64> = serde_json::from_str(stdout(&r).trim()).unwrap();
    for (s, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4,
            "step {s}: runner {a} vs reference {b}\nrunner:    {ours:?}\nreference: {reference:?}"
        );
    }
    assert!(
        ours[steps - 1] < ours[0] - 0.5,
        "loss should fall over 20 steps: {ours:?}"
    );
}

#[test]
fn tiny_matches_reference() {
    parity("tiny.json", |_| {});
}

#[test]
fn gqa_tied_qk_gain_partial_rope_matches_reference() {
    parity("tiny.json", |v| {
        v["tie_embeddings"] = true.into();
        v["blocks"][0] = serde_json::json!({"type": "plain", "heads": 4, "kv_heads": 2, "qk_gain": 1.5, "rope_dims": 8});
    });
}

#[test]
fn layernorm_sandwich_qk_norm_xsa_window_bias_geglu_matches_reference() {
    parity("tiny.json", |v| {
        v["norm_type"] = "layernorm".into();
        v["norm_placement"] = "sandwich".into();
        v["blocks"] = serde_json::json!([
            {"type": "plain", "heads": 4, "kv_heads": 2, "qk_norm": true, "xsa": true, "window_size": 16,
             "attn_bias": true, "ffn_activation": "geglu", "rope_convention": "half_rotation", "rope_base": 500},
            {"type": "geglu"}
        ]);
    });
}

#[test]
fn post_norm_positions_ngrams_softcap_matches_reference() {
    parity("tiny.json", |v| {
        v["norm_placement"] = "post".into();
        v["positional_embedding"] = "learned_absolute".into();
        v["max_positions"] = 80.into();
        v["bigram_vocab_size"] = 512.into();
        v["trigram_vocab_size"] = 300.into();
        v["trigram_dim"] = 16.into();
        v["logit_softcap"] = 15.0.into();
        v["blocks"] = serde_json::json!([
            {"type": "plain", "heads": 4, "ffn_activation": "gelu", "ffn_pre_norm": true},
            {"type": "mlp", "activation": "relu"}
        ]);
    });
}

#[test]
fn unet_resid_mix_block_scales_kv_source_matches_reference() {
    parity("tiny.json", |v| {
        v["unet"] = true.into();
        v["resid_mix"] = true.into();
        v["block_scales"] = true.into();
        v["blocks"] = serde_json::json!([
            {"type": "plain", "heads": 4, "residual_scale_init": 0.5},
            {"type": "swiglu"},
            {"type": "plain", "heads": 4, "kv_source": 1, "ffn_activation": "swiglu"},
            {"type": "swiglu"},
            {"type": "plain", "heads": 4}
        ]);
    });
}

#[test]
fn parallel_residual_and_depth_recurrence_match_reference() {
    parity("tiny.json", |v| {
        v["parallel_residual"] = true.into();
        v["final_norm"] = false.into();
        v["recurrence"] = serde_json::json!([0, 1, 0, 1]);
        v["blocks"] = serde_json::json!([
            {"type": "plain", "heads": 2},
            {"type": "swiglu"},
            {"type": "plain", "heads": 2},
            {"type": "swiglu"}
        ]);
    });
}

#[test]
fn weight_groups_share_like_recurrence() {
    parity("tiny.json", |v| {
        v["blocks"] = serde_json::json!([
            {"type": "plain", "heads": 4, "weight_group": "a"},
            {"type": "mlp", "activation": "leaky_relu_sq"},
            {"type": "plain", "heads": 4, "weight_group": "a"}
        ]);
    });
}
