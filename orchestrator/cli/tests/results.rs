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
        lines[0].starts_with("rank,trial,variant,overrides,seed,params,best_val_loss"),
        "{text}"
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
