//! `mixsweep report` on a sweep written straight into storage (2 variants x 3 seeds, known curves):
//! the files, the numbers in the page against the stored ones, and the page in a real headless
//! Chromium (`scripts/ensure-chromium.sh`; `.ci/run` installs it): it loads without console errors,
//! its DOM has the figures and one table row per trial, and a screenshot is taken.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::*;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mixsweep"))
}

/// Writes the sweep `zoo` into storage: per trial a listing line, a summary and a loss curve.
fn write_sweep(root: &Path) -> Vec<(String, f64)> {
    let mut listing = String::new();
    let mut best = vec![];
    for (v, (variant, params, floor)) in [("attention", 90_000u64, 2.9), ("mamba", 60_000, 2.6)]
        .iter()
        .enumerate()
    {
        for seed in 1..=3u64 {
            let id = format!("t{v}{seed}");
            listing.push_str(&format!(
                "{{\"id\": \"{id}\", \"variant\": \"{variant}\", \"seed\": {seed}, \"params\": {params}, \"overrides\": {{}}}}\n"
            ));
            let dir = root.join("trials").join(&id);
            std::fs::create_dir_all(&dir).unwrap();
            let mut metrics = String::new();
            let mut last = 0.0;
            for step in 0..=6u64 {
                let tokens = 1000 * (step + 1);
                let val = floor + 3.0 * (-(step as f64) / 2.0).exp() + 0.01 * seed as f64;
                last = val;
                metrics.push_str(&format!(
                    "{{\"step\": {step}, \"train_loss\": {}, \"val_loss\": {val}, \"lr\": 0.001, \"grad_norm\": 1.0, \
                     \"tokens\": {tokens}, \"tok_s\": 1000.0, \"elapsed_s\": 1.0, \"mem_active_bytes\": 0, \
                     \"mem_peak_bytes\": 0, \"mem_cache_bytes\": 0}}\n",
                    val + 0.1
                ));
            }
            std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
            let summary = serde_json::json!({"status": "completed", "best_val_loss": last, "final_val_loss": last,
                "final_train_loss": last + 0.1, "mean_tok_s": 1000.0, "wall_time_s": 7.0,
                "flops_per_token": *params as f64 * 6.0, "params": params});
            std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
            best.push((id, last));
        }
    }
    std::fs::create_dir_all(root.join("sweeps/zoo")).unwrap();
    std::fs::write(root.join("sweeps/zoo/trials.jsonl"), listing).unwrap();
    best
}

#[test]
fn report_writes_figures_and_tables_that_chromium_renders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runs");
    let best = write_sweep(&root);
    let out = dir.path().join("report");
    let o = Command::new(bin())
        .args(["report", "zoo", "--storage"])
        .arg(&root)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for stem in [
        "val_loss_tokens",
        "train_loss_tokens",
        "val_loss_flops",
        "pareto_params",
    ] {
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{stem}.svg"
        );
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{stem}.png");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<figure").count(), 4);
    // golden numbers: each trial's stored best validation loss appears in its row
    let trials = &html[html.find("<table id=\"trials\"").unwrap()..];
    let trials = &trials[..trials.find("</table>").unwrap()];
    for (id, v) in &best {
        let row = trials
            .lines()
            .find(|l| l.contains(&format!("<td>{id}</td>")))
            .unwrap();
        assert!(row.contains(&format!("<td>{v:.4}</td>")), "{id}: {row}");
    }
    // the variants table: mamba's mean over its three seeds
    let mamba: f64 = best[3..].iter().map(|b| b.1).sum::<f64>() / 3.0;
    let groups = &html[html.find("<table id=\"groups\"").expect("a variants table")..];
    assert!(groups.contains(&format!("<td>{mamba:.4}</td>")), "{groups}");

    // the page in a real browser
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "no Chromium here: run `bash scripts/ensure-chromium.sh` (installs Debian's chromium)",
        );
    let url = format!("file://{}", out.join("report.html").display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let dom = Command::new(chromium)
        .args(flags)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(dom.status.success(), "{}", text(&dom));
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let console = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !console.contains("Uncaught") && !console.contains(":CONSOLE("),
        "console errors: {console}"
    );
    assert_eq!(dom_text.matches("<svg").count(), 4, "{dom_text}");
    let rendered = &dom_text[dom_text.find("id=\"trials\"").unwrap()..];
    let rendered = &rendered[..rendered.find("</table>").unwrap()];
    assert_eq!(
        rendered.matches("<tr>").count(),
        1 + best.len(),
        "header + one row per trial"
    );
    let shot = out.join("screenshot.png");
    let o = Command::new(chromium)
        .args(flags)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1100,3200")
        .arg(&url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        &png[1..4] == b"PNG" && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    // CI keeps the screenshot for a person to look at
    if let Some(keep) = std::env::var_os("MIXSWEEP_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
