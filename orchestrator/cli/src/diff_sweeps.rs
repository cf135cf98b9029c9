//! `mixsweep diff SWEEP_A SWEEP_B`: how two sweeps differ, from storage alone: their sweep files as
//! JSON paths, and their trials paired by variant, swept values and seed (the same point of the same
//! design, e.g. before and after a change to `set:` or to the code), with the metric difference
//! `b − a` per pair and over all pairs: mean, 95% t interval and the Wilcoxon signed-rank p-value.

use crate::diff::json_diff;
use crate::results::{Target, trials_frame};
use crate::stats::Paired;
use crate::storage::Storage;
use anyhow::Result;
use polars::prelude::*;
use std::collections::BTreeMap;

/// Whether `name` is a sweep in this storage.
pub async fn is_sweep(storage: &Storage, name: &str) -> Result<bool> {
    Ok(storage
        .get(&format!("sweeps/{name}/trials.jsonl"))
        .await?
        .is_some())
}

/// `(variant, overrides, seed) -> metric` of a sweep's ranked table (unranked trials: `None`).
fn by_point(df: &DataFrame) -> Result<BTreeMap<(String, String, u64), Option<f64>>> {
    let (v, o) = (df.column("variant")?.str()?, df.column("overrides")?.str()?);
    let s = df.column("seed")?.cast(&DataType::UInt64)?;
    let s = s.u64()?;
    let m = df.column("metric")?.cast(&DataType::Float64)?;
    let m = m.f64()?;
    Ok((0..df.height())
        .map(|i| {
            let key = (
                v.get(i).unwrap_or_default().to_string(),
                o.get(i).unwrap_or_default().to_string(),
                s.get(i).unwrap_or(0),
            );
            (key, m.get(i))
        })
        .collect())
}

async fn sweep_file(storage: &Storage, name: &str) -> Result<serde_json::Value> {
    Ok(storage
        .get(&format!("sweeps/{name}/sweep.yaml"))
        .await?
        .and_then(|b| serde_saphyr::from_str(&String::from_utf8_lossy(&b)).ok())
        .unwrap_or_default())
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_else(|| "-".into())
}

/// The report: `(section, rows)` with rows of `[what, a, b, note]`.
pub async fn diff(
    storage: &Storage,
    a: &Target,
    b: &Target,
) -> Result<Vec<(String, Vec<[String; 4]>)>> {
    let (fa, fb) = (trials_frame(a).await?, trials_frame(b).await?);
    let (pa, pb) = (by_point(&fa)?, by_point(&fb)?);
    let mut sections = vec![(
        "sweeps".to_string(),
        vec![
            ["name".into(), a.name.clone(), b.name.clone(), String::new()],
            [
                "trials".into(),
                pa.len().to_string(),
                pb.len().to_string(),
                String::new(),
            ],
        ],
    )];
    let (sa, sb) = (
        sweep_file(storage, &a.name).await?,
        sweep_file(storage, &b.name).await?,
    );
    let settings = json_diff(&sa, &sb)
        .into_iter()
        .filter(|c| c.path != "name")
        .map(|c| {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map(|v| v.to_string()).unwrap_or("-".into())
            };
            [c.path, show(&c.a), show(&c.b), String::new()]
        })
        .collect();
    sections.push(("sweep files (JSON paths that differ)".into(), settings));
    let mut rows = vec![];
    let mut diffs = vec![];
    for (key, ma) in &pa {
        let Some(mb) = pb.get(key) else { continue };
        let delta = ma.zip(*mb).map(|(x, y)| y - x);
        diffs.extend(delta);
        let what = format!("{} {} seed={}", key.0, key.1, key.2)
            .trim()
            .replace("  ", " ");
        let note = delta
            .map(|d| format!("b − a = {d:+.6}"))
            .unwrap_or_else(|| "not ranked in both".into());
        rows.push([what, num(*ma), num(*mb), note]);
    }
    let only =
        |x: &BTreeMap<_, _>, y: &BTreeMap<_, _>| x.keys().filter(|k| !y.contains_key(*k)).count();
    let paired = rows.len();
    sections.push((
        format!("{} per point (variant, swept values, seed)", a.metric),
        rows,
    ));
    let mut summary = vec![[
        "points".into(),
        format!("{} only in a", only(&pa, &pb)),
        format!("{} only in b", only(&pb, &pa)),
        format!("{paired} in both"),
    ]];
    if let Some(p) = Paired::of(&diffs) {
        let ci = p
            .diff
            .ci95
            .map(|(lo, hi)| format!("[{lo:+.6}, {hi:+.6}]"))
            .unwrap_or_else(|| "-".into());
        summary.push([
            format!("b − a over {} pairs", p.diff.n),
            format!("mean {:+.6}", p.diff.mean),
            format!("95% t interval {ci}"),
            format!(
                "Wilcoxon p = {}; {}",
                p.wilcoxon
                    .map(|w| format!("{:.4}", w.p))
                    .unwrap_or_else(|| "-".into()),
                p.verdict()
            ),
        ]);
    }
    sections.push((format!("{} difference b − a, paired", a.metric), summary));
    Ok(sections)
}
