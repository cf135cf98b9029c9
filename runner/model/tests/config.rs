//! Config parsing, validation messages (golden), parameter counts and the schedule.

use mixsweep_model::ModelConfig;

fn err(src: &str) -> String {
    ModelConfig::from_jsonc(src).unwrap_err().to_string()
}

const BASE: &str = r#""model_dim": 64, "vocab_size": 256, "seq_len": 32"#;

#[test]
fn golden_error_messages() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"model_dim": 64, "vocab_size": 256, "blocks": [{"type": "plain", "heads": 4}], "trainig": {}}"#,
            "trainig: unknown key `trainig` (fix: did you mean `training`?)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4}}], "training": {{"lr_warmup": 10}}}}"#
            ),
            "training.lr_warmup: unknown key `lr_warmup` (fix: did you mean `warmup_steps`?)",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "kv_head": 2}}]}}"#),
            "blocks[0].kv_head: unknown key `kv_head` (fix: did you mean `kv_heads`?)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4}}, {{"type": "plain", "heads": 4, "kv_heads": 3}}]}}"#
            ),
            "blocks[1].kv_heads: kv_heads=3 must divide heads=4 (fix: use a divisor of heads (kv_heads = heads is plain multi-head attention, 1 is multi-query))",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "plain"}}]}}"#),
            "blocks[0].heads: a plain block needs `heads` (fix: add e.g. \"heads\": 4 (model_dim must be divisible by it))",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 5}}]}}"#),
            "blocks[0].heads: heads=5 must be > 0 and divide model_dim=64",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "kv_heads": 2, "differential_attention": true}}]}}"#
            ),
            "blocks[0].kv_heads: differential_attention cannot be combined with kv_heads (as in mixlab) (fix: remove kv_heads from this block, or differential_attention)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 32, "differential_attention": true}}]}}"#
            ),
            "blocks[0].heads: the rotated width (head_dim = model_dim / heads, half of it with differential_attention) is 1: odd, and RoPE rotates pairs of features (fix: choose heads so that model_dim / heads is even, or set an even rope_dims)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "differential_lambda_init": 0.5}}]}}"#
            ),
            "blocks[0].differential_lambda_init: differential_lambda_init only applies with differential_attention (fix: add \"differential_attention\": true, or remove differential_lambda_init)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 2, "differential_attention": true}}, {{"type": "plain", "heads": 2, "kv_source": 1}}]}}"#
            ),
            "blocks[1].kv_source: blocks[0] is a plain block that shares no keys; kv_source needs a plain block without differential_attention",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "mamb"}}]}}"#),
            "blocks[0].type: unknown block type \"mamb\" (fix: did you mean \"mamba\"?)",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "ttt_mlp"}}]}}"#),
            "blocks[0].type: block type \"ttt_mlp\" exists in mixlab but is not implemented in mixsweep yet (fix: use one of: plain, swiglu, geglu, mlp, mamba, token_blend, gated_linear_ssm, mamba3, legacy_mamba, retnet, rwkv, moe, perceiver, bottleneck, hgrn2, mlstm, mamba3-canonical, s4d, gated_deltanet, cross_attention, custom)",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "s4d", "bidirectional": true}}]}}"#),
            "blocks[0].bidirectional: a bidirectional (non-causal) s4d is not supported by mixsweep's s4d (fix: remove the field (mixsweep's s4d is the causal S4D-Lin, zero-order hold, B = 1))",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"batch_tokens": 100}}}}"#
            ),
            "training.batch_tokens: batch_tokens=100 must be a multiple of seq_len=32 (fix: use e.g. 96)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"optimizer": "muonn"}}}}"#
            ),
            "training.optimizer: unknown optimizer \"muonn\" (fix: did you mean \"muon\"? (one of: muon, muon_eq_r, normuon, adamw, lamb))",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"warmup_steps": 10, "warmup_ratio": 0.1}}}}"#
            ),
            "training.warmup_ratio: cannot set both training.warmup_steps and training.warmup_ratio",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"steps": 10, "phases": [{{"steps": 4, "lr": 0.001}}]}}}}"#
            ),
            "training.steps: steps=10 differs from the 4 steps of the phases (fix: leave steps out: with phases it is their sum)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"early_stop": {{"patience": 3, "min_delat": 0.1}}}}}}"#
            ),
            "training.early_stop.min_delat: unknown key `min_delat` (fix: did you mean `min_delta`?)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"lr": "fast"}}}}"#
            ),
            "training.lr: expected a number, found a string",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "rope_dims": 6}}], "mtp": {{"n": 2}}}}"#
            ),
            "mtp: mtp = {\"n\":2} is a mixlab feature that mixsweep does not implement yet (fix: remove it; multi-token prediction is not implemented)",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"objective": "mlm", "mlm_mask_prob": 0.15}}}}"#
            ),
            "training.objective: objective = \"mlm\" is a mixlab feature that mixsweep does not implement yet (fix: remove it, or set it to its default \"causal\"; mixsweep trains causal language models)",
        ),
        (
            r#"{"model_dim": 32, "input_adapter": {"kind": "linear_frames", "feature_dim": 1}, "blocks": [{"type": "swiglu"}]}"#,
            "input_adapter: input_adapter = {\"feature_dim\":1,\"kind\":\"linear_frames\"} is a mixlab feature",
        ),
        (
            &format!(
                r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "export_head": 1}}]}}"#
            ),
            "blocks[0].export_head: unknown key `export_head` (fix: valid keys here:",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "rope_dims": 18}}]}}"#),
            "blocks[0].rope_dims: rope_dims=18 must be <= head_dim=16",
        ),
        (
            r#"{"vocab_size": 256, "blocks": []}"#,
            "model_dim: model_dim is required and must be > 0 (fix: add e.g. \"model_dim\": 128)",
        ),
        (
            &format!(r#"{{{BASE}, "blocks": []}}"#),
            "blocks: blocks must hold at least one block",
        ),
        (
            &format!(r#"{{{BASE}, "vocab_size": 70000, "blocks": [{{"type": "swiglu"}}]}}"#),
            "vocab_size: vocab_size=70000 exceeds 65536, the limit of uint16 token shards (fix: use a tokenizer with at most 65536 tokens)",
        ),
        (
            "{\n  \"model_dim\": 64,\n  \"vocab_size\": 256\n  \"blocks\": []\n}",
            "invalid JSON at line 4 column 3",
        ),
    ];
    for (src, want) in cases {
        let got = err(src);
        assert!(
            got.starts_with(want),
            "\nconfig: {src}\n   got: {got}\n  want: {want}"
        );
    }
}

#[test]
fn errors_from_files_name_the_file() {
    let dir = std::env::temp_dir().join(format!("mixsweep-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.json");
    std::fs::write(
        &path,
        format!(r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4, "kv_heads": 3}}]}}"#),
    )
    .unwrap();
    let e = ModelConfig::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: blocks[0].kv_heads:", path.display())),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn jsonc_comments_and_defaults() {
    let cfg = ModelConfig::from_jsonc(
        r#"// a comment
        {
          "model_dim": 64, /* block comment */ "vocab_size": 256,
          "name": "has // not a comment",
          "blocks": [{"type": "plain", "heads": 4}]
        }"#,
    )
    .unwrap();
    assert_eq!(cfg.name, "has // not a comment");
    assert_eq!(cfg.seq_len, 128);
    let t = &cfg.training;
    assert_eq!(
        (
            t.steps,
            t.batch_tokens,
            t.seed,
            t.warmup_steps,
            t.hold_steps
        ),
        (200, 1024, 42, 100, 200)
    );
    assert_eq!(
        (t.lr, t.beta1, t.beta2, t.matrix.weight_decay),
        (3e-4, 0.9, 0.95, 0.01)
    );
}

#[test]
fn exact_parameter_counts() {
    // tiny: D=64, V=256, F=max(64, round(64*2))=128, untied
    let cfg = ModelConfig::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/tiny.json"
    )))
    .unwrap();
    let (d, v, f) = (64, 256, 128);
    let plain = d + 4 * d * d + 2 * d * f; // norm, wq wk wv wo, ff1 ff2
    let swiglu = d + 3 * d * f;
    assert_eq!(cfg.counts().params, v * d + d * v + d + plain + swiglu);
    // GQA shrinks wk and wv: kv_heads=2 of 4 heads -> kv_dim = 32
    let gqa = ModelConfig::from_jsonc(&format!(
        r#"{{{BASE}, "mlp_mult": 2, "tie_embeddings": true, "blocks": [{{"type": "plain", "heads": 4, "kv_heads": 2, "qk_gain": 1.5}}]}}"#
    ))
    .unwrap();
    assert_eq!(
        gqa.counts().params,
        256 * 64 + 64 + (64 + 2 * 64 * 64 + 2 * 64 * 32 + 2 * 64 * 128 + 4)
    );
    // mamba with D=64: I=128, N=16, R=4, K=4
    let m = ModelConfig::from_jsonc(&format!(
        r#"{{{BASE}, "tie_embeddings": true, "blocks": [{{"type": "mamba"}}]}}"#
    ))
    .unwrap();
    let (i, n, r, k) = (128, 16, 4, 4);
    let mamba = d + d * 2 * i + k * i + i + i * (r + 2 * n) + r * i + i + i * n + i + i * d;
    assert_eq!(m.counts().params, 256 * 64 + 64 + mamba);
}

#[test]
fn flops_follow_mixlab_convention() {
    let cfg = ModelConfig::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/nanogpt_shakespeare.json"
    )))
    .unwrap();
    let c = cfg.counts();
    let (d, t, f, v) = (384.0, 256.0, 1536.0, 256.0);
    let per_layer = 2.0 * (4.0 * d * d + 2.0 * d * f) + 4.0 * t * d;
    assert_eq!(c.forward_flops_per_token, 6.0 * per_layer + 2.0 * d * v);
    assert_eq!(c.train_flops_per_token, 3.0 * c.forward_flops_per_token);
    assert_eq!(c.params, 10_816_128);
}

#[test]
fn phases_with_warmdown_and_warmup_ratio() {
    let t = mixsweep_model::TrainingConfig::from_value(
        Some(&serde_json::json!({"lr": 1e-3, "warmdown_steps": 4,
            "phases": [{"steps": 10, "lr": 1e-3}, {"steps": 10, "lr": 5e-4, "label": "low"}]})),
        32,
    )
    .unwrap();
    assert_eq!(t.steps, 20);
    let lr = |s: usize| t.lr * t.lr_scale(s);
    assert_eq!(
        (lr(0), lr(9), lr(10), lr(15), lr(16)),
        (1e-3, 1e-3, 5e-4, 5e-4, 5e-4)
    );
    // the last 4 steps ramp linearly to 1% of the last phase's lr
    assert!(
        (lr(18) - (5e-4 + 0.5 * (5e-6 - 5e-4))).abs() < 1e-12,
        "{}",
        lr(18)
    );
    assert!(
        (lr(25) - 5e-6).abs() < 1e-12,
        "held past the end: {}",
        lr(25)
    );
    assert_eq!(t.phase_at(12), Some((1, 10)));
    let r = mixsweep_model::TrainingConfig::from_value(
        Some(&serde_json::json!({"steps": 1000, "warmup_ratio": 0.05})),
        32,
    )
    .unwrap();
    assert_eq!(r.warmup_steps, 50);
}

#[test]
fn schedule_warmup_hold_cosine_floor() {
    let cfg = ModelConfig::from_jsonc(&format!(
        r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"steps": 1000, "warmup_steps": 100, "hold_steps": 200}}}}"#
    ))
    .unwrap();
    let t = &cfg.training;
    assert_eq!(t.lr_scale(0), 0.0);
    assert!((t.lr_scale(50) - 0.5).abs() < 1e-12);
    assert_eq!(t.lr_scale(100), 1.0);
    assert_eq!(t.lr_scale(299), 1.0);
    assert!((t.lr_scale(650) - (0.1 + 0.9 * 0.5)).abs() < 1e-12); // halfway through the cosine
    assert!((t.lr_scale(1000) - 0.1).abs() < 1e-12); // mixlab's 10% floor
}

#[test]
fn config_hash_ignores_comments_and_key_order() {
    let a = ModelConfig::from_jsonc(&format!(r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}]}}"#))
        .unwrap();
    let b = ModelConfig::from_jsonc(
        r#"// same model
        {"blocks": [{"type": "swiglu"}], "seq_len": 32, "vocab_size": 256, "model_dim": 64}"#,
    )
    .unwrap();
    assert_eq!(a.config_hash, b.config_hash);
}

/// A field written at mixlab's default value is accepted, whether mixsweep implements it or not
/// (a mixlab user's config often spells out defaults).
#[test]
fn fields_at_their_mixlab_defaults_are_accepted() {
    let top = [
        r#""name": "probe""#,
        r#""seq_len": 32"#,
        r#""mlp_mult": 2.67"#,
        r#""tie_embeddings": false"#,
        r#""dropout": 0"#,
        r#""embedding_dropout": 0.0"#,
        r#""norm_type": "rmsnorm""#,
        r#""norm_eps": 1e-5"#,
        r#""norm_affine": true"#,
        r#""norm_placement": "pre""#,
        r#""final_norm": true"#,
        r#""ffn_internal_norm": false"#,
        r#""block_scales": false"#,
        r#""resid_mix": false"#,
        r#""parallel_residual": false"#,
        r#""unet": false"#,
        r#""bigram_vocab_size": 0"#,
        r#""trigram_vocab_size": 0"#,
        r#""char_vocab_size": 0"#,
        r#""logit_softcap": 0"#,
        r#""positional_embedding": "rope""#,
        r#""input_adapter": {"kind": "token_embedding"}"#,
        r#""smear_embeddings": false"#,
        r#""tie_dropout": false"#,
        r#""layer_aggregation": "none""#,
        r#""rc_equivariant": false"#,
        r#""data": {"no_shard_shuffle": false}"#,
        r#""eval": {}"#,
    ];
    let training = [
        r#""objective": "causal""#,
        r#""optimizer": "adamw""#,
        r#""lr_schedule": "cosine""#,
        r#""warmup_ratio": 0"#,
        r#""target_val_loss": 0"#,
        r#""swa_start": 0"#,
        r#""swa_decay": 0.999"#,
        r#""hardware_tflops": 0"#,
        r#""qat": "none""#,
        r#""qat_start": 0"#,
        r#""ttt_steps": 0"#,
        r#""ttt_mode": "full""#,
        r#""z_loss": 0"#,
        r#""first_byte_mask": false"#,
        r#""muon_nesterov": true"#,
        r#""cautious_weight_decay": false"#,
        r#""weight_init": "xavier_uniform""#,
        r#""seed": 42"#,
    ];
    let plain = [
        r#""kv_heads": 4"#,
        r#""window_size": 0"#,
        r#""attention_mask": "causal""#,
        r#""rope_convention": "adjacent_pair""#,
        r#""rope_dims": 0"#,
        r#""qk_norm": false"#,
        r#""xsa": false"#,
        r#""kv_source": 0"#,
        r#""attn_bias": false"#,
        r#""ffn_activation": "silu""#,
        r#""ffn_pre_norm": false"#,
        r#""skip_attention": false"#,
        r#""sparse_attn_gate": false"#,
        r#""attn_value_gate": false"#,
        r#""attn_post_norm": false"#,
        r#""ffn_bias": false"#,
        r#""differential_attention": false"#,
        r#""relative_attention": false"#,
    ];
    let probe = |top: &str, training: &str, plain: &str| {
        format!(
            r#"{{"model_dim": 64, "vocab_size": 256{top}, "blocks": [{{"type": "plain", "heads": 4{plain}}}], "training": {{"steps": 10{training}}}}}"#
        )
    };
    let mut failed = vec![];
    let cases = top
        .iter()
        .map(|f| probe(&format!(", {f}"), "", ""))
        .chain(training.iter().map(|f| probe("", &format!(", {f}"), "")))
        .chain(plain.iter().map(|f| probe("", "", &format!(", {f}"))));
    for src in cases {
        if let Err(e) = ModelConfig::from_jsonc(&src) {
            failed.push(format!("{src}\n    -> {e}"));
        }
    }
    assert!(
        failed.is_empty(),
        "default-valued fields refused:\n{}",
        failed.join("\n")
    );
}

/// An unimplemented mode is reported before its sub-fields, and the same way on every block type.
#[test]
fn unimplemented_modes_first_and_weight_groups_on_every_block() {
    let got = err(&format!(
        r#"{{{BASE}, "blocks": [{{"type": "swiglu"}}], "training": {{"objective": "mlm", "mlm_mask_prob": 0.2, "mlm_fancy": 1}}}}"#
    ));
    assert!(
        got.starts_with("training.objective: objective = \"mlm\""),
        "{got}"
    );
    for kind in [
        r#""type": "swiglu""#,
        r#""type": "mlp""#,
        r#""type": "mamba""#,
        r#""type": "plain", "heads": 4"#,
    ] {
        let src = format!(
            r#"{{{BASE}, "blocks": [{{{kind}, "weight_group": "g"}}, {{"type": "swiglu"}}, {{{kind}, "weight_group": "g"}}]}}"#
        );
        let cfg = ModelConfig::from_jsonc(&src).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let c = cfg.counts();
        assert!(
            c.params_expanded > c.params,
            "{kind}: the group shares weights: {c:?}"
        );
    }
}

/// A custom block's mistakes name the block, the op and the input, with a fix where one is clear.
#[test]
fn custom_block_errors_name_the_op_and_input() {
    let block = |ops: &str| {
        format!(
            r#"{{{BASE}, "blocks": [{{"type": "custom", "name": "ff", "weights": [{{"name": "w", "shape": ["D", "FFN"]}}], "ops": [{ops}]}}]}}"#
        )
    };
    let add = r#"{"op": "add", "inputs": ["x", "y"], "output": "x"}"#;
    let cases = [
        (
            format!(r#"{{"op": "matmull", "inputs": ["x", "w"], "output": "y"}}, {add}"#),
            "blocks[0].ops[0].op: unknown op \"matmull\" (fix: did you mean \"matmul\"?)",
        ),
        (
            format!(r#"{{"op": "matmul", "inputs": ["x", "w2"], "output": "y"}}, {add}"#),
            "blocks[0].ops[0].inputs[1]: `w2` is not defined before this op (defined: x, w)",
        ),
        (
            format!(r#"{{"op": "matmul", "inputs": ["w", "x"], "output": "y"}}, {add}"#),
            "blocks[0].ops[0]: matmul(w, x): inner dimensions differ",
        ),
        (
            format!(r#"{{"op": "matmul", "inputs": ["x", "w"], "output": "y"}}, {add}"#),
            "blocks[0].ops[1]: add(x, y): ",
        ),
        (
            r#"{"op": "matmul", "inputs": ["x", "w"], "output": "x"}"#.to_string(),
            "blocks[0].ops: the block must leave `x` as [BT, D] = [BT, 64], but its last value of x is [BT, 171]",
        ),
    ];
    for (ops, want) in cases {
        let got = err(&block(&ops));
        assert!(
            got.starts_with(want),
            "\n   ops: {ops}\n   got: {got}\n  want: {want}"
        );
    }
}

/// Found by fuzzing (fuzz/README.md): sizes whose weights overflow `usize` are errors, not panics.
#[test]
fn absurd_sizes_are_errors_not_overflows() {
    for edit in [
        r#""mlp_mult": 4444444444444444"#,
        r#""model_dim": 4611686018427387904"#,
        r#""vocab_size": 4611686018427387904"#,
    ] {
        let src = format!(
            r#"{{"model_dim": 64, "vocab_size": 256, "seq_len": 32, {edit}, "blocks": [{{"type": "plain", "heads": 4}}]}}"#
        );
        let e = err(&src);
        assert!(
            ["far too large", "must", "exceeds"]
                .iter()
                .any(|w| e.contains(w)),
            "{edit}: {e}"
        );
    }
}

#[test]
fn cross_attention_names_its_source_stream() {
    let cfg = |src: &str| {
        format!(
            r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4}}, {{"type": "cross_attention", "heads": 4, "source_stream": "{src}"}}]}}"#
        )
    };
    assert!(ModelConfig::from_jsonc(&cfg("block:1")).is_ok());
    assert!(ModelConfig::from_jsonc(&cfg("embedding")).is_ok());
    let e = err(&cfg("low1"));
    assert!(
        e.contains("blocks[1].source_stream: unknown source_stream \"low1\"")
            && e.contains("block:K"),
        "{e}"
    );
    let e = err(&cfg("block:2"));
    assert!(
        e.contains("blocks[1]") && e.contains("\"block:2\" is not a stream before this block"),
        "{e}"
    );
}

#[test]
fn moe_counts_the_active_experts() {
    let cfg = ModelConfig::from_jsonc(&format!(
        r#"{{{BASE}, "mlp_mult": 2, "blocks": [{{"type": "moe", "num_experts": 4, "top_k": 1}}, {{"type": "plain", "heads": 4}}]}}"#
    ))
    .unwrap();
    let c = cfg.counts();
    // four swiglu experts of 3·D·F = 3·64·128 weights; one of them is active per token
    let expert = 3 * 64 * 128;
    assert_eq!(c.params - c.active_params, 3 * expert);
    let dense = ModelConfig::from_jsonc(&format!(
        r#"{{{BASE}, "blocks": [{{"type": "plain", "heads": 4}}]}}"#
    ))
    .unwrap()
    .counts();
    assert_eq!(dense.active_params, dense.params);
}
