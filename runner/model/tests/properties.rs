//! Properties of config parsing and lowering over generated configs (proptest): any config either
//! fails with a `ConfigError` or lowers to a program whose counts match its weights — never a panic.

use proptest::prelude::*;
use serde_json::{Value, json};

/// A block object: a known type with plausible, often invalid, field values.
fn block() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0usize..20, 0usize..20, 0usize..70, any::<bool>()).prop_map(|(h, kv, rope, gain)| {
            let mut b = json!({"type": "plain", "heads": h, "kv_heads": kv, "rope_dims": rope});
            if gain {
                b["qk_gain"] = json!(1.5);
            }
            b
        }),
        Just(json!({"type": "swiglu"})),
        (0usize..4).prop_map(|a| {
            let act = ["silu", "gelu", "relu", "leaky_relu_sq"][a];
            json!({"type": "mlp", "activation": act})
        }),
        (0usize..40, 0usize..40, 0usize..6, 0usize..20).prop_map(|(i, n, k, c)| {
            json!({"type": "mamba", "inner_dim": i, "state_size": n, "conv_kernel": k, "scan_chunk": c})
        }),
        "[a-z_]{1,10}".prop_map(|t| json!({"type": t})),
    ]
}

fn config() -> impl Strategy<Value = Value> {
    (
        0usize..130,
        0usize..300,
        0usize..70,
        prop::collection::vec(block(), 0..4),
        0usize..3000,
        0.0f64..4.0,
        any::<bool>(),
    )
        .prop_map(|(d, v, t, blocks, bt, mult, tie)| {
            json!({"model_dim": d, "vocab_size": v, "seq_len": t, "blocks": blocks,
                   "mlp_mult": mult, "tie_embeddings": tie, "training": {"batch_tokens": bt}})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn configs_parse_or_fail_cleanly_and_valid_ones_lower(doc in config()) {
        if let Ok(cfg) = mixsweep_model::ModelConfig::from_value(&doc) {
            let program = cfg.lower();
            let counts = cfg.counts();
            let weights: usize = program.weights.iter().map(|w| w.numel()).sum();
            prop_assert_eq!(counts.params, weights);
            prop_assert!(counts.forward_flops_per_token > 0.0);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(text in ".{0,200}") {
        let _ = mixsweep_model::ModelConfig::from_jsonc(&text);
    }
}
