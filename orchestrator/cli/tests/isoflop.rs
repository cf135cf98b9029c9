//! A `budget:` sweep end to end on CPU: each trial trains for the steps its compute budget allows,
//! `results` fits loss against ln(params) per budget (checked against numpy's polyfit of the same
//! stored metrics), prices the trials from the sweep's `cost:`, and `report` draws the iso-FLOP
//! curves and the trials' timeline.

use std::process::Command;

mod support;
use support::*;

fn mixsweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixsweep"));
    c.env("MIXSWEEP_RUNNER", runner());
    c
}

fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let head: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            head.iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn an_iso_flop_sweep_trains_to_its_budgets_and_is_fitted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    prepare_bytes(&d.join("data"));
    std::fs::copy(root().join("examples/tiny.json"), d.join("tiny.json")).unwrap();
    let sweep = d.join("iso.yaml");
    std::fs::write(
        &sweep,
        "name: iso\nbase: tiny.json\ngrid: {model_dim: [16, 32, 64]}\nbudget: {flops: [5e9, 1e10]}\n\
         seeds: [1]\nset: {training.warmup_steps: 2, training.val_every: 10, training.log_every: 10, training.val_batches: 2}\n\
         train: data/train_*.bin\ncost: {gpu_hour_usd: 2.5, cpu_hour_usd: 0.5}\n",
    )
    .unwrap();
    let store = d.join("runs");
    let o = mixsweep()
        .arg("run")
        .arg(&sweep)
        .arg("--storage")
        .arg(&store)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // every trial spent its budget: steps × tokens per step × training FLOPs per token
    let listing = std::fs::read_to_string(store.join("sweeps/iso/trials.jsonl")).unwrap();
    assert_eq!(listing.lines().count(), 6);
    for line in listing.lines() {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = t["id"].as_str().unwrap();
        let s = json(&store.join(format!("trials/{id}/summary.json")));
        let (budget, fpt) = (
            t["budget_flops"].as_f64().unwrap(),
            t["flops_per_token"].as_f64().unwrap(),
        );
        assert_eq!(s["steps_completed"], t["steps"], "{id}");
        let spent = s["tokens"].as_f64().unwrap() * fpt;
        assert!(
            (spent - budget).abs() <= 0.5 * 1024.0 * fpt + 1.0,
            "{id}: spent {spent} of {budget}"
        );
    }

    let (r, f) = (d.join("r.csv"), d.join("fits.csv"));
    let o = mixsweep()
        .args(["results", "iso", "--storage"])
        .arg(&store)
        .arg("--csv")
        .arg(&r)
        .arg("--fits-csv")
        .arg(&f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("iso-FLOP fits"), "{}", text(&o));
    let rows = csv_rows(&r);
    // CPU trials are priced at cpu_hour_usd for their wall time
    for row in &rows {
        let (dev, cost): (f64, f64) = (
            row["device_s"].parse().unwrap(),
            row["cost_usd"].parse().unwrap(),
        );
        assert!((cost - dev / 3600.0 * 0.5).abs() < 1e-9, "{row:?}");
    }
    // the same fit from numpy: per budget, polyfit(ln params, metric, 2) and its vertex
    let points: Vec<(f64, f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["budget.flops"].parse().unwrap(),
                r["params"].parse().unwrap(),
                r["metric"].parse().unwrap(),
            )
        })
        .collect();
    let script = r#"
import json, sys
import numpy as np
by = {}
for b, p, m in json.loads(sys.argv[1]):
    by.setdefault(b, []).append((np.log(p), m))
out = {}
for b, pts in by.items():
    x, y = map(np.array, zip(*pts))
    a, bb, c = np.polyfit(x, y, 2)
    out[repr(float(b))] = None if a <= 0 else {"n": float(np.exp(-bb / (2 * a))), "m": float(c - bb * bb / (4 * a))}
print(json.dumps(out))
"#;
    let py = Command::new("python3")
        .args(["-c", script, &serde_json::to_string(&points).unwrap()])
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success(),
        "numpy is needed (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let want: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let fits = csv_rows(&f);
    assert_eq!(fits.len(), 2);
    for fit in &fits {
        let b: f64 = fit["budget_flops"].parse().unwrap();
        assert_eq!(fit["sizes"], "3");
        match &want[format!("{b:?}")] {
            serde_json::Value::Null => assert!(fit["note"].contains("no minimum"), "{fit:?}"),
            w => {
                let n: f64 = fit["optimal_params"].parse().unwrap();
                let m: f64 = fit["metric_at_optimum"].parse().unwrap();
                assert!(
                    (n / w["n"].as_f64().unwrap() - 1.0).abs() < 1e-6,
                    "{fit:?} vs numpy {w}"
                );
                assert!(
                    (m - w["m"].as_f64().unwrap()).abs() < 1e-6,
                    "{fit:?} vs numpy {w}"
                );
            }
        }
    }

    // the report draws the iso-FLOP curves and the timeline of the six trials
    let out = d.join("report");
    let o = mixsweep()
        .args(["report", "iso", "--storage"])
        .arg(&store)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for fig in ["isoflop", "timeline", "parallel"] {
        assert!(out.join(format!("{fig}.png")).is_file(), "{fig}.png");
        assert!(
            html.contains(&format!("id=\"fig-{fig}\"")),
            "{fig} in the page"
        );
    }
    let svg = std::fs::read_to_string(out.join("timeline.svg")).unwrap();
    // one bar per trial (the legend adds one rectangle per ending)
    assert!(svg.matches("<rect").count() >= 6, "{svg}");

    // a second sweep sharing one trial: `results A B` lists each trial once, with its sweep
    let other = d.join("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&sweep)
            .unwrap()
            .replace("name: iso", "name: other")
            .replace("[16, 32, 64]", "[16, 48]")
            .replace("[5e9, 1e10]", "[5e9]"),
    )
    .unwrap();
    let o = mixsweep()
        .arg("run")
        .arg(&other)
        .arg("--storage")
        .arg(&store)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let m = d.join("merged.csv");
    let o = mixsweep()
        .args(["results", "iso", "other", "--storage"])
        .arg(&store)
        .arg("--csv")
        .arg(&m)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rows = csv_rows(&m);
    assert_eq!(rows.len(), 7, "6 + the one trial only `other` has");
    let from_other: Vec<&str> = rows
        .iter()
        .filter(|r| r["sweep"] == "other")
        .map(|r| r["model_dim"].as_str())
        .collect();
    assert_eq!(from_other, ["48"]);
    let ranks: Vec<usize> = rows.iter().map(|r| r["rank"].parse().unwrap()).collect();
    assert_eq!(ranks, (1..=7).collect::<Vec<_>>());

    // diff of the two sweeps: their files differ at grid.model_dim and budget.flops; the one shared
    // point pairs up with a difference of exactly 0 (the same trial)
    let o = mixsweep()
        .args(["diff", "iso", "other", "--storage"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("grid.model_dim") && out.contains("budget.flops"),
        "{out}"
    );
    assert!(
        out.contains("5 only in a") && out.contains("1 only in b") && out.contains("1 in both"),
        "{out}"
    );
    assert!(out.contains("mean +0.000000"), "{out}");
}
