//! `mixsweep results` and `status` from storage: ranking, per-variant aggregation over seeds with paired
//! differences, exports.

use std::path::PathBuf;
use std::process::Command;

mod support;
use support::*;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mixsweep")).with_file_name(name)
}

#[test]
fn results_rank_group_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    prepare_bytes(&d.join("data"));
    for f in ["tiny.json", "tiny_mamba.json"] {
        std::fs::copy(root().join("examples").join(f), d.join(f)).unwrap();
    }
    let sweep = d.join("sweep.yaml");
    std::fs::write(
        &sweep,
        "name: agg\nvariants:\n  - {name: attention, base: tiny.json}\n  - {name: mamba, base: tiny_mamba.json}\nsteps: 20\nseeds: [1, 2]\ntrain: data/train_*.bin\n",
    )
    .unwrap();
    let store = d.join("runs");
    let o = Command::new(bin("mixsweep"))
        .arg("run")
        .arg(&sweep)
        .arg("--storage")
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // by name + storage, with exports
    let csv = d.join("r.csv");
    let o = Command::new(bin("mixsweep"))
        .args(["results", "agg", "--storage"])
        .arg(&store)
        .arg("--csv")
        .arg(&csv)
        .arg("--parquet")
        .arg(d.join("r.parquet"))
        .arg("--json")
        .arg(d.join("r.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("rank,trial,variant,overrides,seed,params,state_values,best_val_loss"),
        "{text}"
    );
    // the inference state each trial's runner reported: attention's KV cache is larger than mamba's state
    let state_col = lines[0]
        .split(',')
        .position(|c| c == "state_values")
        .unwrap();
    let state_of = |variant: &str| -> u64 {
        let row = lines[1..].iter().find(|l| l.contains(variant)).unwrap();
        row.split(',').nth(state_col).unwrap().parse().unwrap()
    };
    assert!(state_of("attention") > state_of("mamba"), "{text}");
    // --context: the state at 1024 tokens from the IR; attention's KV cache grows 16x from its
    // seq_len of 64, the Mamba state does not grow (MiB at 2 bytes a value)
    let ccsv = d.join("c.csv");
    let o = Command::new(bin("mixsweep"))
        .args(["results", "agg", "--context", "1024", "--storage"])
        .arg(&store)
        .arg("--csv")
        .arg(&ccsv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = std::fs::read_to_string(&ccsv).unwrap();
    let head: Vec<&str> = c.lines().next().unwrap().split(',').collect();
    let at = head
        .iter()
        .position(|h| *h == "state_mib_at_1024")
        .expect("state column");
    let mib = |variant: &str| -> f64 {
        let row = c.lines().skip(1).find(|l| l.contains(variant)).unwrap();
        row.split(',').nth(at).unwrap().parse().unwrap()
    };
    let bytes = |values: u64| values as f64 * 2.0 / (1u64 << 20) as f64;
    assert!(
        (mib("attention") - bytes(state_of("attention") * 16)).abs() < 1e-9,
        "{c}"
    );
    assert!(
        (mib("mamba") - bytes(state_of("mamba"))).abs() < 1e-9,
        "{c}"
    );
    let metric_col = lines[0].split(',').position(|c| c == "metric").unwrap();
    let metrics: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(metric_col).unwrap().parse().unwrap())
        .collect();
    assert!(
        metrics.windows(2).all(|w| w[0] <= w[1]),
        "not ranked: {metrics:?}"
    );
    assert!(std::fs::metadata(d.join("r.parquet")).unwrap().len() > 100);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);

    // by sweep file, grouped over seeds
    let gcsv = d.join("g.csv");
    let o = Command::new(bin("mixsweep"))
        .arg("results")
        .arg(&sweep)
        .args(["--group-by", "variant", "--storage"])
        .arg(&store)
        .arg("--csv")
        .arg(&gcsv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = std::fs::read_to_string(&gcsv).unwrap();
    let head: Vec<&str> = g.lines().next().unwrap().split(',').collect();
    for c in [
        "variant",
        "mean",
        "std",
        "n",
        "paired_diff_to_best",
        "seed_wins_vs_best",
        "pairs",
    ] {
        assert!(head.contains(&c), "missing {c}: {g}");
    }
    let rows: Vec<Vec<&str>> = g.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2);
    let col = |r: &Vec<&str>, c: &str| r[head.iter().position(|h| *h == c).unwrap()].to_string();
    assert_eq!(col(&rows[0], "n"), "2");
    assert_eq!(
        col(&rows[0], "paired_diff_to_best").parse::<f64>().unwrap(),
        0.0,
        "the best variant's diff to itself"
    );
    assert!(col(&rows[1], "paired_diff_to_best").parse::<f64>().unwrap() > 0.0);
    assert_eq!(col(&rows[1], "pairs"), "2");

    // --at: every trial's validation loss read off its curve at the same number of tokens,
    // checked against an interpolation done here from the stored metrics.jsonl
    let at_csv = d.join("at.csv");
    let o = Command::new(bin("mixsweep"))
        .args(["results", "agg", "--storage"])
        .arg(&store)
        .args(["--at", "tokens=10000", "--csv"])
        .arg(&at_csv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = std::fs::read_to_string(&at_csv).unwrap();
    let head: Vec<&str> = t.lines().next().unwrap().split(',').collect();
    let at_col = |r: &str, c: &str| {
        r.split(',')
            .nth(head.iter().position(|h| *h == c).unwrap())
            .unwrap()
            .to_string()
    };
    for row in t.lines().skip(1) {
        let id = at_col(row, "trial");
        let pts: Vec<(f64, f64)> =
            std::fs::read_to_string(store.join(format!("trials/{id}/metrics.jsonl")))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter_map(|m| Some((m["tokens"].as_f64()?, m["val_loss"].as_f64()?)))
                .collect();
        let after = pts.iter().position(|p| p.0 >= 10000.0).unwrap();
        let ((x0, y0), (x1, y1)) = (pts[after - 1], pts[after]);
        let expected = y0 + (y1 - y0) * (10000.0 - x0) / (x1 - x0);
        let got: f64 = at_col(row, "metric").parse().unwrap();
        assert!((got - expected).abs() < 1e-9, "{id}: {got} vs {expected}");
    }
    // a budget no trial reached ranks nothing; a budget of the wrong kind is refused with the fix
    let o = Command::new(bin("mixsweep"))
        .args(["results", "agg", "--storage"])
        .arg(&store)
        .args(["--at", "tokens=1e12", "--csv"])
        .arg(&at_csv)
        .output()
        .unwrap();
    assert!(o.status.success());
    let t = std::fs::read_to_string(&at_csv).unwrap();
    assert!(t.lines().skip(1).all(|r| r.starts_with(',')), "{t}");
    let o = Command::new(bin("mixsweep"))
        .args(["results", "agg", "--storage"])
        .arg(&store)
        .args(["--at", "steps=5"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tokens=N or flops=N"));

    // status lists the sweep with its progress
    let o = Command::new(bin("mixsweep"))
        .args(["status", "--storage"])
        .arg(&store)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    let row = s
        .lines()
        .find(|l| l.contains("agg"))
        .unwrap_or_else(|| panic!("no row for the sweep: {s}"));
    // trials, done, failed, diverged, interrupted, new; nobody running it
    let numbers: Vec<u64> = row
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers, vec![4, 4, 0, 0, 0, 0], "{s}");
    assert!(row.trim_end().ends_with('-'), "{s}");
}

/// A 2x2 grid over 6 seeds written straight into storage (no training): `results --group-by` on a
/// swept path gives the intervals and Wilcoxon p-values that scipy.stats computes from the same
/// numbers.
#[test]
fn group_by_a_swept_path_matches_scipy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let (mut listing, mut rows) = (String::new(), vec![]);
    let mut x = 12345u64;
    for (i, lr) in [0.001, 0.003].iter().enumerate() {
        for dim in [32, 64] {
            for seed in 1..=6u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (x >> 33) as f64 / (1u64 << 31) as f64; // [0, 1)
                let loss = 2.0 + 0.05 * i as f64 + 0.01 * (dim / 32) as f64 + 0.08 * noise;
                let id = format!("t{i}{dim}{seed}");
                listing.push_str(&format!(
                    "{{\"id\": \"{id}\", \"variant\": \"base\", \"seed\": {seed}, \"params\": 1000, \
                     \"overrides\": {{\"training.lr\": {lr}, \"model_dim\": {dim}}}}}\n"
                ));
                let t = root.join("trials").join(&id);
                std::fs::create_dir_all(&t).unwrap();
                let summary = serde_json::json!({"status": "completed", "best_val_loss": loss,
                    "final_val_loss": loss, "final_train_loss": loss, "mean_tok_s": 1000.0,
                    "wall_time_s": 1.0});
                std::fs::write(t.join("summary.json"), summary.to_string()).unwrap();
                rows.push((lr.to_string(), seed, loss));
            }
        }
    }
    std::fs::create_dir_all(root.join("sweeps/grid")).unwrap();
    std::fs::write(root.join("sweeps/grid/trials.jsonl"), listing).unwrap();
    let (g, p) = (dir.path().join("g.csv"), dir.path().join("p.csv"));
    let o = Command::new(bin("mixsweep"))
        .args(["results", "grid", "--group-by", "training.lr", "--storage"])
        .arg(&root)
        .arg("--csv")
        .arg(&g)
        .arg("--pairs-csv")
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Wilcoxon"), "{out}");
    let read = |path: &std::path::Path| -> Vec<serde_json::Map<String, serde_json::Value>> {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let head: Vec<String> = lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        lines
            .map(|l| {
                head.iter()
                    .zip(l.split(','))
                    .map(|(h, v)| (h.clone(), serde_json::Value::String(v.to_string())))
                    .collect()
            })
            .collect()
    };
    let num = |r: &serde_json::Map<String, serde_json::Value>, k: &str| -> f64 {
        r[k].as_str().unwrap().parse().unwrap()
    };
    let (groups, pairs) = (read(&g), read(&p));
    assert_eq!(groups.len(), 2);
    assert_eq!(pairs.len(), 1);

    // the same statistics from scipy
    let data = serde_json::to_string(&rows).unwrap();
    let script = r#"
import json, sys
import numpy as np
from scipy import stats
rows = json.loads(sys.argv[1])
by = {}
for lr, seed, loss in rows:
    by.setdefault(lr, {}).setdefault(seed, []).append(loss)
out = {}
for lr, seeds in by.items():
    v = np.array([x for s in seeds.values() for x in s])
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    out[lr] = {"mean": v.mean(), "lo": lo, "hi": hi}
a, b = sorted(by, key=lambda k: out[k]["mean"])
d = np.array([np.mean(by[a][s]) - np.mean(by[b][s]) for s in sorted(by[a])])
lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
out["pair"] = {"a": a, "mean": d.mean(), "lo": lo, "hi": hi, "p": stats.wilcoxon(d).pvalue}
print(json.dumps(out))
"#;
    let py = Command::new("python3")
        .args(["-c", script, &data])
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success(),
        "scipy is needed for this test (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let want: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs scipy {b}");
    for r in &groups {
        let w = &want[r["training.lr"].as_str().unwrap()];
        assert_eq!(num(r, "n"), 12.0);
        close(num(r, "mean"), w["mean"].as_f64().unwrap());
        close(num(r, "ci95_lo"), w["lo"].as_f64().unwrap());
        close(num(r, "ci95_hi"), w["hi"].as_f64().unwrap());
    }
    let (pair, w) = (&pairs[0], &want["pair"]);
    assert_eq!(pair["a"].as_str().unwrap(), w["a"].as_str().unwrap());
    assert_eq!(num(pair, "pairs"), 6.0);
    close(num(pair, "diff_mean"), w["mean"].as_f64().unwrap());
    close(num(pair, "diff_ci95_lo"), w["lo"].as_f64().unwrap());
    close(num(pair, "diff_ci95_hi"), w["hi"].as_f64().unwrap());
    close(num(pair, "wilcoxon_p"), w["p"].as_f64().unwrap());

    // the ranked table shows the swept paths as columns; --varying-only drops the constant ones
    let o = Command::new(bin("mixsweep"))
        .args(["results", "grid", "--varying-only", "--storage"])
        .arg(&root)
        .arg("--csv")
        .arg(dir.path().join("v.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = std::fs::read_to_string(dir.path().join("v.csv")).unwrap();
    let head = v.lines().next().unwrap();
    for c in ["training.lr", "model_dim", "seed", "metric"] {
        assert!(head.split(',').any(|h| h == c), "{c} missing: {head}");
    }
    for c in ["params", "variant", "status"] {
        assert!(!head.split(',').any(|h| h == c), "{c} is constant: {head}");
    }
    // --pareto marks the non-dominated trials: with equal params, the best metric alone
    let o = Command::new(bin("mixsweep"))
        .args(["results", "grid", "--pareto", "metric,params", "--storage"])
        .arg(&root)
        .arg("--csv")
        .arg(dir.path().join("f.csv"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = std::fs::read_to_string(dir.path().join("f.csv")).unwrap();
    let head: Vec<&str> = f.lines().next().unwrap().split(',').collect();
    let at = head
        .iter()
        .position(|h| *h == "pareto")
        .expect("pareto column");
    let marks: Vec<&str> = f
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(at).unwrap())
        .collect();
    assert_eq!(
        marks[0], "true",
        "the ranked first trial is on the front: {f}"
    );
    assert_eq!(marks.iter().filter(|m| **m == "true").count(), 1, "{f}");
    // --effects: the grid's main effects and interactions
    let o = Command::new(bin("mixsweep"))
        .args(["results", "grid", "--effects", "--storage"])
        .arg(&root)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "main effects",
        "grand mean",
        "training.lr=0.001",
        "model_dim=64 × training.lr=0.003",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    // an unknown grouping key names the ones there are
    let o = Command::new(bin("mixsweep"))
        .args(["results", "grid", "--group-by", "training.lrr", "--storage"])
        .arg(&root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("training.lr"), "{err}");
}

/// `mixsweep diff` names the config paths that differ, the run fields, and the metric difference;
/// a prefix shared by two trials is refused with the candidates.
#[test]
fn diff_two_trials_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let put = |id: &str, cfg: serde_json::Value, summary: serde_json::Value| {
        let t = root.join("trials").join(id);
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("config.json"), cfg.to_string()).unwrap();
        std::fs::write(t.join("summary.json"), summary.to_string()).unwrap();
        let listing = serde_json::json!({"id": id, "data_id": format!("data-of-{id}"), "train": "d/train_*.bin", "seed": 1});
        std::fs::write(t.join("trial.json"), listing.to_string()).unwrap();
    };
    put(
        "abc111",
        serde_json::json!({"model_dim": 64, "blocks": [{"type": "plain", "heads": 4}], "training": {"lr": 0.001}}),
        serde_json::json!({"status": "completed", "best_val_loss": 2.5, "device": "cpu", "mlx_version": "0.32.2"}),
    );
    put(
        "abd222",
        serde_json::json!({"model_dim": 64, "blocks": [{"type": "plain", "heads": 8}], "training": {"lr": 0.003}}),
        serde_json::json!({"status": "completed", "best_val_loss": 2.25, "device": "gpu", "mlx_version": "0.32.2"}),
    );
    let o = Command::new(bin("mixsweep"))
        .args(["diff", "abc", "abd", "--storage"])
        .arg(&root)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "blocks[0].heads",
        "training.lr",
        "0.003",
        "abc111",
        "abd222",
        "b − a = -0.250000",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(
        !out.contains("model_dim"),
        "unchanged paths are not listed:\n{out}"
    );
    let device = out.lines().find(|l| l.contains("device")).unwrap();
    assert!(device.contains("differs"), "{out}");
    // the data each trained on (its identity hash) and the runner's version are compared too
    let data = out.lines().find(|l| l.contains("data_id")).unwrap();
    assert!(
        data.contains("data-of-abc111") && data.contains("differs"),
        "{out}"
    );
    let train = out
        .lines()
        .find(|l| l.trim_start().starts_with("train "))
        .unwrap();
    assert!(!train.contains("differs"), "{out}");
    assert!(out.contains("runner_version"), "{out}");
    let o = Command::new(bin("mixsweep"))
        .args(["diff", "ab", "abd", "--storage"])
        .arg(&root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ambiguous") && err.contains("abc111"),
        "{err}"
    );
}
