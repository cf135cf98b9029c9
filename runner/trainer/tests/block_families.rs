//! Each block family learns tiny Shakespeare on CPU: a 2-layer model (the family's block + swiglu,
//! twice) at the tiny example's size trains until its loss is well below the byte unigram entropy
//! (3.31 nats), which no model that ignores context can reach.

mod common;
use common::*;

const UNIGRAM_ENTROPY: f64 = 3.31;

fn learns(
    name: &str,
    block: serde_json::Value,
    steps: usize,
    below: f64,
) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_from_example("tiny.json", dir.path(), name, |v| {
        v["blocks"] = serde_json::json!([block, {"type": "swiglu"}, block, {"type": "swiglu"}]);
        v["training"]["steps"] = steps.into();
        v["training"]["val_every"] = 0.into();
        v["training"]["batch_tokens"] = 512.into();
    });
    let out = dir.path().join("run");
    let o = runner()
        .args(["train", "--device", "cpu", "--quiet", "--config"])
        .arg(&cfg)
        .args(["--train", &train_glob(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let s = read_json(&out.join("summary.json"));
    let (train, val) = (
        s["final_train_loss"].as_f64().unwrap(),
        s["best_val_loss"].as_f64().unwrap(),
    );
    assert!(
        train < UNIGRAM_ENTROPY - below && val < UNIGRAM_ENTROPY - below,
        "{name}: train {train}, val {val} after {steps} steps: not {below} below the unigram entropy"
    );
    metrics(&out.join("metrics.jsonl"))
}

#[test]
fn retnet_learns() {
    let _ = learns(
        "retnet",
        serde_json::json!({"type": "retnet", "heads": 4, "decay": 0.95}),
        120,
        0.6,
    );
}

#[test]
fn differential_attention_learns() {
    let _ = learns(
        "differential",
        serde_json::json!({"type": "plain", "heads": 2, "differential_attention": true}),
        120,
        0.6,
    );
}

#[test]
fn rwkv_learns() {
    let _ = learns("rwkv", serde_json::json!({"type": "rwkv"}), 120, 0.6);
}

#[test]
fn legacy_mamba_learns() {
    let _ = learns(
        "legacy_mamba",
        serde_json::json!({"type": "legacy_mamba"}),
        120,
        0.6,
    );
}

#[test]
fn moe_learns_and_logs_its_load_balancing_loss() {
    let block = serde_json::json!({"type": "moe", "num_experts": 4, "top_k": 2});
    let m = learns("moe", block, 120, 0.6);
    let last = m
        .iter()
        .rev()
        .find(|r| r.get("train_loss").is_some())
        .unwrap();
    for b in [0, 2] {
        let lb = last[format!("aux.blocks.{b}.load_balance")]
            .as_f64()
            .unwrap_or_else(|| panic!("no load balance of block {b}: {last}"));
        // 0.01 · E · Σ_e P_e F_e / k: 0.01 when balanced, at most 0.01 · E / k when collapsed
        assert!(
            (0.005..=0.02).contains(&lb),
            "block {b}: load balance {lb}: {last}"
        );
    }
}

#[test]
fn causal_perceiver_learns() {
    let block = serde_json::json!({"type": "perceiver", "heads": 4, "num_latents": 8});
    let _ = learns("perceiver", block, 120, 0.5);
}

#[test]
fn hgrn2_learns() {
    let block = serde_json::json!({"type": "hgrn2", "heads": 4, "d_state": 16});
    let _ = learns("hgrn2", block, 120, 0.6);
}

#[test]
fn mlstm_learns() {
    let block = serde_json::json!({"type": "mlstm", "heads": 4, "d_k": 16, "d_v": 16});
    let _ = learns("mlstm", block, 120, 0.6);
}

#[test]
fn cross_attention_learns() {
    let block =
        serde_json::json!({"type": "cross_attention", "heads": 4, "source_stream": "embedding"});
    let _ = learns("cross_attention", block, 120, 0.6);
}

#[test]
fn mamba3_canonical_learns() {
    let block = serde_json::json!({"type": "mamba3-canonical"});
    let _ = learns("mamba3_canonical", block, 120, 0.6);
}

#[test]
fn s4d_learns() {
    let block = serde_json::json!({"type": "s4d", "state_size": 16});
    let _ = learns("s4d", block, 120, 0.6);
}

#[test]
fn gated_deltanet_learns() {
    let block = serde_json::json!({"type": "gated_deltanet", "heads": 4, "d_k": 16});
    let _ = learns("gated_deltanet", block, 120, 0.6);
}
