//! Every block family is causal: the logits at position `i` do not change when tokens after `i`
//! change. (mixlab's perceiver and bottleneck are not; mixsweep's are, see their module docs.)

use mixsweep_mlx::{Array, Dtype};
use mixsweep_model::{ComputeDtype, ModelConfig};
use mixsweep_runner::executor::Executor;

fn logits(cfg: &ModelConfig, ids: &[i32]) -> Vec<f32> {
    let program = cfg.lower();
    let host = mixsweep_runner::init::initial_weights(&program.weights, 5);
    let w = mixsweep_runner::init::upload(&program.weights, &host).unwrap();
    let exec = Executor::new(&program, ComputeDtype::Float32);
    let toks = Array::from_i32(ids, &[1, ids.len()]).unwrap();
    let out = exec.forward(&w, &toks, None, None).unwrap().logits;
    out.astype(Dtype::F32).unwrap().to_vec_f32().unwrap()
}

#[test]
fn changing_later_tokens_never_changes_earlier_logits() {
    let blocks = [
        serde_json::json!({"type": "plain", "heads": 2}),
        serde_json::json!({"type": "plain", "heads": 2, "differential_attention": true}),
        serde_json::json!({"type": "mamba"}),
        serde_json::json!({"type": "retnet", "heads": 2}),
        serde_json::json!({"type": "rwkv"}),
        serde_json::json!({"type": "legacy_mamba"}),
        serde_json::json!({"type": "gated_linear_ssm"}),
        serde_json::json!({"type": "token_blend"}),
        serde_json::json!({"type": "moe", "num_experts": 3}),
        serde_json::json!({"type": "perceiver", "heads": 2, "num_latents": 4}),
        serde_json::json!({"type": "bottleneck", "heads": 2}),
        serde_json::json!({"type": "hgrn2", "heads": 2, "d_state": 4}),
        serde_json::json!({"type": "mamba3-canonical", "state_size": 4, "n_groups": 2}),
        serde_json::json!({"type": "s4d", "state_size": 6, "n_ssm": 4}),
        serde_json::json!({"type": "gated_deltanet", "heads": 2, "d_k": 4}),
        serde_json::json!({"type": "mlstm", "heads": 2, "d_k": 4, "d_v": 4}),
        serde_json::json!({"type": "cross_attention", "heads": 2, "source_stream": "embedding"}),
    ];
    let (t, v) = (24usize, 50usize);
    let ids: Vec<i32> = (0..t as i32).map(|i| (i * 17 + 3) % v as i32).collect();
    for block in blocks {
        let cfg = ModelConfig::from_value(&serde_json::json!({
            "model_dim": 16, "vocab_size": v, "seq_len": t,
            "blocks": [block, {"type": "swiglu"}, block], "training": {"batch_tokens": t * 4}
        }))
        .unwrap();
        let base = logits(&cfg, &ids);
        for cut in [1, 5, 6, 13, 23] {
            let mut changed = ids.clone();
            for id in &mut changed[cut..] {
                *id = (*id + 7) % v as i32;
            }
            let other = logits(&cfg, &changed);
            let diff = base[..cut * v]
                .iter()
                .zip(&other[..cut * v])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-5,
                "{block}: logits before position {cut} change by {diff} when later tokens change"
            );
        }
    }
}
