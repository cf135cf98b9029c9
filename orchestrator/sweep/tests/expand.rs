//! Sweep expansion: counts, ids, filters, ties, invalid points, random search, errors.

use std::path::{Path, PathBuf};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A folder with a tiny config, a shard of data, and room for sweep files.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("model.json"),
            r#"// tiny
            {"model_dim": 64, "vocab_size": 256, "seq_len": 16, "mlp_mult": 2,
             "blocks": [{"type": "plain", "heads": 4}, {"type": "swiglu"}],
             "training": {"steps": 10, "batch_tokens": 64, "seed": 5}}"#,
        )
        .unwrap();
        std::fs::write(
            d.join("mamba.json"),
            r#"{"model_dim": 64, "vocab_size": 256, "seq_len": 16,
                "blocks": [{"type": "mamba", "state_size": 4}], "training": {"batch_tokens": 64}}"#,
        )
        .unwrap();
        std::fs::create_dir(d.join("data")).unwrap();
        let mut shard = vec![0u8; 1024];
        shard[0..4].copy_from_slice(&20240520i32.to_le_bytes());
        shard[4..8].copy_from_slice(&1i32.to_le_bytes());
        shard[8..12].copy_from_slice(&100i32.to_le_bytes());
        shard.extend((0..100u16).flat_map(|t| t.to_le_bytes()));
        std::fs::write(d.join("data/train_00000.bin"), &shard).unwrap();
        Fixture { dir }
    }

    fn sweep(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn load(p: &Path) -> mixsweep_sweep::Sweep {
    mixsweep_sweep::load(p).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn trial_count_is_product_of_axes_times_seeds() {
    let f = Fixture::new();
    let s = load(&f.sweep(
        "s.yaml",
        r#"
name: count
variants:
  - {name: attention, base: model.json, grid: {"blocks[type=plain].kv_heads": [1, 2, 4]}}
  - {name: mamba, base: mamba.json}
grid:
  training.lr: [0.001, 0.002]
  mlp_mult: [2, 3]
zip:
  training.beta1: [0.8, 0.9]
  training.beta2: [0.95, 0.99]
seeds: [1, 2, 3]
train: data/train_*.bin
"#,
    ));
    // attention: 2 lr x 2 mlp x 2 zip x 3 kv x 3 seeds; mamba: 2 x 2 x 2 x 3 seeds
    assert_eq!(s.trials.len(), 72 + 24);
    let t = &s.trials[0];
    assert_eq!(t.config()["training"]["seed"], 1);
    assert!(
        t.overrides_text().contains("training.lr="),
        "{}",
        t.overrides_text()
    );
    assert!(
        s.trials
            .iter()
            .filter(|t| t.variant() == "mamba")
            .all(|t| t.config()["blocks"][0].get("kv_heads").is_none())
    );
    let mut ids: Vec<&str> = s.trials.iter().map(|t| t.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), s.trials.len(), "ids must be unique");
}

#[test]
fn ids_are_stable_across_runs_and_key_order() {
    let f = Fixture::new();
    let a = load(&f.sweep("a.yaml", "name: a\nbase: model.json\ngrid: {training.lr: [0.001, 0.002]}\nseeds: [7]\ntrain: data/train_*.bin\n"));
    let again = load(&f.sweep("a2.yaml", "name: a\nbase: model.json\ngrid: {training.lr: [0.001, 0.002]}\nseeds: [7]\ntrain: data/train_*.bin\n"));
    assert_eq!(
        a.trials.iter().map(|t| &t.id).collect::<Vec<_>>(),
        again.trials.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    // the same model with keys in another order, a comment, and 2.0 written for 2
    std::fs::write(
        f.path().join("reordered.json"),
        r#"{"training": {"seed": 5, "batch_tokens": 64, "steps": 10}, "blocks": [{"heads": 4, "type": "plain"}, {"type": "swiglu"}],
            "mlp_mult": 2.0, "seq_len": 16, "vocab_size": 256, "model_dim": 64}"#,
    )
    .unwrap();
    let b = load(&f.sweep("b.yaml", "name: b\nbase: reordered.json\ngrid: {training.lr: [0.001, 0.002]}\nseeds: [7]\ntrain: data/train_*.bin\n"));
    assert_eq!(
        a.trials.iter().map(|t| &t.id).collect::<Vec<_>>(),
        b.trials.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    // a different seed or different data changes the id
    let c = load(&f.sweep("c.yaml", "name: c\nbase: model.json\ngrid: {training.lr: [0.001]}\nseeds: [8]\ntrain: data/train_*.bin\n"));
    assert_ne!(c.trials[0].id, a.trials[0].id);
}

#[test]
fn ties_follow_other_values() {
    let f = Fixture::new();
    let s = load(&f.sweep(
        "t.yaml",
        "name: t\nbase: model.json\ngrid: {model_dim: [32, 64, 128]}\ntie: {\"blocks[type=plain].heads\": model_dim / 16}\ntrain: data/train_*.bin\n",
    ));
    let heads: Vec<i64> = s
        .trials
        .iter()
        .map(|t| t.config()["blocks"][0]["heads"].as_i64().unwrap())
        .collect();
    assert_eq!(heads, vec![2, 4, 8]);
    assert_eq!(
        s.trials[0].config()["training"]["seed"],
        5,
        "without `seeds` the config's own seed is used"
    );
}

#[test]
fn invalid_points_fail_the_plan_or_are_skipped() {
    let f = Fixture::new();
    let yaml = "name: v\nbase: model.json\ngrid: {\"blocks[0].kv_heads\": [1, 3, 4]}\ntrain: data/train_*.bin\n";
    let e = mixsweep_sweep::load(&f.sweep("v.yaml", yaml))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("v.yaml:3:")
            && e.contains("blocks[0].kv_heads=3")
            && e.contains("kv_heads=3 must divide heads=4"),
        "{e}"
    );
    assert!(e.contains("skip_invalid"), "{e}");
    let s = load(&f.sweep("v2.yaml", &format!("{yaml}skip_invalid: true\n")));
    assert_eq!(s.trials.len(), 2);
    assert_eq!(s.skipped.len(), 1);
    assert!(s.skipped[0].reason.contains("must divide"));
}

#[test]
fn random_search_is_seeded_and_in_bounds() {
    let f = Fixture::new();
    let yaml = r#"
name: r
base: model.json
random:
  samples: 20
  seed: 3
  params:
    training.lr: {log_uniform: [0.0001, 0.01]}
    training.warmup_steps: {int_uniform: [1, 5]}
    mlp_mult: {choice: [2, 3]}
    training.beta1: {uniform: [0.8, 0.9]}
train: data/train_*.bin
"#;
    let a = load(&f.sweep("r.yaml", yaml));
    let b = load(&f.sweep("r2.yaml", yaml));
    assert_eq!(a.trials.len() + a.duplicates.len(), 20);
    assert_eq!(
        a.trials.iter().map(|t| &t.id).collect::<Vec<_>>(),
        b.trials.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    for t in &a.trials {
        let lr = t.config()["training"]["lr"].as_f64().unwrap();
        let w = t.config()["training"]["warmup_steps"].as_i64().unwrap();
        assert!(
            (1e-4..=1e-2).contains(&lr) && (1..=5).contains(&w),
            "{}",
            t.overrides_text()
        );
    }
}

#[test]
fn duplicate_points_run_once() {
    let f = Fixture::new();
    let s = load(&f.sweep(
        "d.yaml",
        "name: d\nbase: model.json\ngrid: {mlp_mult: [2, 2.0]}\ntrain: data/train_*.bin\n",
    ));
    assert_eq!(s.trials.len(), 1);
    assert_eq!(s.duplicates.len(), 1);
}

#[test]
fn errors_carry_location_and_fix() {
    let f = Fixture::new();
    let e = mixsweep_sweep::load(&f.sweep(
        "u.yaml",
        "name: u\nbase: model.json\ngird: {training.lr: [1]}\ntrain: data/train_*.bin\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("u.yaml:3:") && e.contains("did you mean `grid`"),
        "{e}"
    );
    let e = mixsweep_sweep::load(&f.sweep("z.yaml", "name: z\nbase: model.json\nzip: {training.lr: [1, 2], training.beta1: [0.9]}\ntrain: data/train_*.bin\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("z.yaml:3:1") && e.contains("same length"), "{e}");
    let e = mixsweep_sweep::load(&f.sweep(
        "p.yaml",
        "name: p\nbase: model.json\ngrid: {\"blocks[x].heads\": [1]}\ntrain: data/train_*.bin\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("invalid parameter path"), "{e}");
    let e = mixsweep_sweep::load(&f.sweep(
        "m.yaml",
        "name: m\nbase: model.json\ntrain: data/nothing_*.bin\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("matches no files") && e.contains("prepare"),
        "{e}"
    );
}

/// Property: for random axis shapes, the trial count is the product of the axis lengths times the
/// seeds, and ids are unique (every point differs).
#[test]
fn count_property_over_random_shapes() {
    let f = Fixture::new();
    let mut rng = mixsweep_model::rng::SplitMix64::new(11);
    for case in 0..12 {
        let pick =
            |rng: &mut mixsweep_model::rng::SplitMix64, n: u64| (rng.next_u64() % n) as usize + 1;
        let (n_lr, n_b1, n_zip, n_seeds) = (
            pick(&mut rng, 4),
            pick(&mut rng, 3),
            pick(&mut rng, 3),
            pick(&mut rng, 3),
        );
        let list = |n: usize, scale: f64| {
            (0..n)
                .map(|i| format!("{}", scale * (i as f64 + 1.0)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let yaml = format!(
            "name: p{case}\nbase: model.json\ngrid:\n  training.lr: [{}]\n  training.beta1: [{}]\nzip:\n  training.warmup_steps: [{}]\n  training.hold_steps: [{}]\nseeds: [{}]\ntrain: data/train_*.bin\n",
            list(n_lr, 0.001),
            list(n_b1, 0.1),
            list(n_zip, 1.0),
            list(n_zip, 2.0),
            (1..=n_seeds)
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let s = load(&f.sweep(&format!("p{case}.yaml"), &yaml));
        assert_eq!(s.trials.len(), n_lr * n_b1 * n_zip * n_seeds, "{yaml}");
        let ids: std::collections::HashSet<&str> = s.trials.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids.len(), s.trials.len());
    }
}

#[test]
fn a_compute_budget_sets_each_trials_steps() {
    let f = Fixture::new();
    let s = load(&f.sweep(
        "b.yaml",
        "name: b\nbase: model.json\ngrid: {model_dim: [32, 64]}\nbudget: {flops: [1e9, 4e9]}\nseeds: [1, 2]\ntrain: data/train_*.bin\n",
    ));
    assert_eq!(s.trials.len(), 2 * 2 * 2);
    for t in &s.trials {
        let b = t.budget.expect("every trial has its budget");
        // batch_tokens 64: steps = budget / (training FLOPs per token * 64), rounded
        let want = (b / (t.flops_per_token * 64.0)).round() as usize;
        assert_eq!(t.steps, want.max(1), "{}", t.overrides_text());
        assert_eq!(t.config()["training"]["steps"], t.steps);
        assert!(
            t.overrides_text().contains("budget.flops="),
            "{}",
            t.overrides_text()
        );
        // the spent compute is the budget to within one step
        let spent = t.steps as f64 * 64.0 * t.flops_per_token;
        assert!((spent - b).abs() <= 0.5 * 64.0 * t.flops_per_token + 1.0);
    }
    // a smaller model takes more steps for the same budget; 4x the budget is ~4x the steps
    let steps = |dim: i64, b: f64| {
        s.trials
            .iter()
            .find(|t| t.config()["model_dim"] == dim && t.budget == Some(b))
            .unwrap()
            .steps
    };
    assert!(steps(32, 1e9) > steps(64, 1e9));
    assert!((steps(64, 4e9) as f64 / steps(64, 1e9) as f64 - 4.0).abs() < 0.2);
    // budget and steps together, or a bad budget, are refused with the field named
    for (extra, msg) in [
        ("budget: {flops: [1e9]}\nsteps: 5\n", "remove `steps:`"),
        ("budget: {flops: [-1]}\n", "not a positive number"),
        ("budget: {flops: []}\n", "at least one budget"),
    ] {
        let e = mixsweep_sweep::load(&f.sweep(
            "bad.yaml",
            &format!("name: bad\nbase: model.json\ntrain: data/train_*.bin\n{extra}"),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("budget") && e.contains(msg), "{e}");
    }
}
