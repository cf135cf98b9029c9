//! `mixsweep results --group-by KEY`: trials grouped by their variant or by any swept path, with
//! a 95% interval per group and, for every pair of groups, the seed-paired difference with its
//! interval and the Wilcoxon signed-rank test ([`crate::stats`]).
//!
//! A group's value for one seed is the mean over its trials with that seed (its other axes); pairs
//! use the seeds both groups have. Only completed trials (a metric) count.

use crate::stats::{Interval, Paired};
use anyhow::{Result, bail};
use polars::prelude::*;
use std::collections::BTreeMap;

/// The group tables: one row per group, one row per pair of groups.
pub struct Comparison {
    pub groups: DataFrame,
    pub pairs: DataFrame,
}

/// The ranked table's own columns; the others are swept paths.
const BASE_COLUMNS: &[&str] = &[
    "rank",
    "trial",
    "variant",
    "overrides",
    "seed",
    "params",
    "state_values",
    "best_val_loss",
    "final_val_loss",
    "final_train_loss",
    "tok_s",
    "wall_s",
    "status",
    "metric",
    "pareto",
    "flops_per_token",
    "train_flops",
    "peak_mem_gb",
    "device_s",
    "cost_usd",
    "sweep",
];

/// `group -> seed -> metric values` of the completed trials.
type BySeed = BTreeMap<String, BTreeMap<u64, Vec<f64>>>;
/// `group -> (params, tok/s of its trials)`.
type Extra = BTreeMap<String, (u64, Vec<f64>)>;

fn collect(trials: &DataFrame, key: &str) -> Result<(BySeed, Extra)> {
    let Ok(label) = trials.column(key) else {
        let known = factors(trials);
        bail!(
            "--group-by {key:?}: no such column; group by `variant` or a swept path of this sweep ({})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        );
    };
    let label = label.cast(&DataType::String)?;
    let label = label.str()?;
    let seed = trials.column("seed")?.u64()?;
    let metric = trials.column("metric")?.f64()?;
    let params = trials.column("params")?.u64()?;
    let tok = trials.column("tok_s")?.f64()?;
    let (mut by_seed, mut extra) = (BySeed::new(), BTreeMap::new());
    for i in 0..trials.height() {
        let (Some(m), Some(s)) = (metric.get(i), seed.get(i)) else {
            continue;
        };
        let g = label.get(i).unwrap_or("-").to_string();
        by_seed
            .entry(g.clone())
            .or_default()
            .entry(s)
            .or_default()
            .push(m);
        let e = extra
            .entry(g)
            .or_insert((params.get(i).unwrap_or(0), vec![]));
        e.1.extend(tok.get(i));
    }
    if by_seed.is_empty() {
        bail!("no finished trials to aggregate");
    }
    Ok((by_seed, extra))
}

fn per_seed(seeds: &BTreeMap<u64, Vec<f64>>) -> BTreeMap<u64, f64> {
    seeds
        .iter()
        .map(|(s, v)| (*s, v.iter().sum::<f64>() / v.len() as f64))
        .collect()
}

/// `a − b` over the seeds both have.
fn diffs(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Vec<f64> {
    a.iter()
        .filter_map(|(s, x)| b.get(s).map(|y| x - y))
        .collect()
}

/// Groups ranked by their mean (best first), with intervals, and every pair compared.
pub fn compare(trials: &DataFrame, key: &str, goal_max: bool) -> Result<Comparison> {
    let (by_seed, extra) = collect(trials, key)?;
    let mut stats: Vec<(String, Interval, BTreeMap<u64, f64>)> = by_seed
        .iter()
        .filter_map(|(g, seeds)| {
            let all: Vec<f64> = seeds.values().flatten().copied().collect();
            Some((g.clone(), Interval::of(&all)?, per_seed(seeds)))
        })
        .collect();
    stats.sort_by(|a, b| {
        let o = a.1.mean.total_cmp(&b.1.mean);
        if goal_max { o.reverse() } else { o }
    });
    let best = stats[0].2.clone();
    let better = |d: f64| if goal_max { d > 0.0 } else { d < 0.0 };
    let mut cols: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    let (mut names, mut ns, mut params, mut wins, mut pairs) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (g, iv, seeds) in &stats {
        names.push(g.clone());
        ns.push(iv.n as u32);
        params.push(extra[g].0);
        let d = diffs(seeds, &best);
        wins.push(d.iter().filter(|x| better(**x)).count() as u32);
        pairs.push(d.len() as u32);
        let tok = &extra[g].1;
        let values = [
            ("mean", Some(iv.mean)),
            ("std", iv.std),
            ("ci95_lo", iv.ci95.map(|c| c.0)),
            ("ci95_hi", iv.ci95.map(|c| c.1)),
            (
                "paired_diff_to_best",
                (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64),
            ),
            (
                "tok_s",
                (!tok.is_empty()).then(|| tok.iter().sum::<f64>() / tok.len() as f64),
            ),
        ];
        for (c, v) in values {
            cols.entry(c).or_default().push(v);
        }
    }
    let groups = df!(
        key => names,
        "n" => ns,
        "mean" => cols["mean"].clone(),
        "std" => cols["std"].clone(),
        "ci95_lo" => cols["ci95_lo"].clone(),
        "ci95_hi" => cols["ci95_hi"].clone(),
        "paired_diff_to_best" => cols["paired_diff_to_best"].clone(),
        "seed_wins_vs_best" => wins,
        "pairs" => pairs,
        "params" => params,
        "tok_s" => cols["tok_s"].clone(),
    )?;
    Ok(Comparison {
        groups,
        pairs: pair_table(&stats)?,
    })
}

/// Every pair of groups (in rank order): `a − b` over shared seeds.
fn pair_table(stats: &[(String, Interval, BTreeMap<u64, f64>)]) -> Result<DataFrame> {
    let (mut a, mut b, mut n, mut mean, mut lo, mut hi) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut p, mut exact, mut verdict) = (vec![], vec![], vec![]);
    for (i, (ga, _, sa)) in stats.iter().enumerate() {
        for (gb, _, sb) in &stats[i + 1..] {
            let Some(pd) = Paired::of(&diffs(sa, sb)) else {
                continue;
            };
            a.push(ga.clone());
            b.push(gb.clone());
            n.push(pd.diff.n as u32);
            mean.push(pd.diff.mean);
            lo.push(pd.diff.ci95.map(|c| c.0));
            hi.push(pd.diff.ci95.map(|c| c.1));
            p.push(pd.wilcoxon.map(|w| w.p));
            exact.push(pd.wilcoxon.map(|w| w.exact));
            verdict.push(pd.verdict());
        }
    }
    Ok(df!(
        "a" => a,
        "b" => b,
        "pairs" => n,
        "diff_mean" => mean,
        "diff_ci95_lo" => lo,
        "diff_ci95_hi" => hi,
        "wilcoxon_p" => p,
        "exact" => exact,
        "verdict" => verdict,
    )?)
}

/// Whether larger is better for a column (throughput) or smaller (losses, sizes, time); a leading
/// `+` or `-` on the name says so explicitly.
fn direction(spec: &str) -> (&str, bool) {
    if let Some(c) = spec.strip_prefix('+') {
        return (c, true);
    }
    if let Some(c) = spec.strip_prefix('-') {
        return (c, false);
    }
    (spec, matches!(spec, "tok_s" | "mfu"))
}

/// Adds a `pareto` column: true for the trials no other trial beats or ties on every one of `specs`
/// (2 or 3 columns) while beating it on one. Trials missing a value are never on the front.
pub fn pareto(df: &DataFrame, specs: &[String]) -> Result<DataFrame> {
    if !(2..=3).contains(&specs.len()) {
        bail!("--pareto takes two or three columns, e.g. --pareto metric,params");
    }
    let mut cols: Vec<(Vec<Option<f64>>, bool)> = Vec::new();
    for spec in specs {
        let (name, maximize) = direction(spec.trim());
        let c = df.column(name).map_err(|_| {
            anyhow::anyhow!(
                "--pareto: no column {name:?} (columns: {})",
                df.get_column_names()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let c = c.cast(&DataType::Float64)?;
        let sign = if maximize { -1.0 } else { 1.0 }; // minimise sign·x
        let c = c.f64()?;
        let values = (0..c.len()).map(|i| c.get(i).map(|x| sign * x)).collect();
        cols.push((values, maximize));
    }
    let n = df.height();
    let point = |i: usize| -> Option<Vec<f64>> { cols.iter().map(|(c, _)| c[i]).collect() };
    let points: Vec<Option<Vec<f64>>> = (0..n).map(point).collect();
    let dominated = |p: &[f64], q: &[f64]| {
        q.iter().zip(p).all(|(a, b)| a <= b) && q.iter().zip(p).any(|(a, b)| a < b)
    };
    let front: Vec<bool> = points
        .iter()
        .map(|p| match p {
            None => false,
            Some(p) => !points.iter().flatten().any(|q| dominated(p, q)),
        })
        .collect();
    let mut out = df.clone();
    out.with_column(Column::new("pareto".into(), front))?;
    Ok(out)
}

/// Drops the columns whose values are the same in every row (keeping the identity and metric).
pub fn varying_only(df: &DataFrame) -> Result<DataFrame> {
    let keep: Vec<String> = df
        .columns()
        .iter()
        .filter(|c| {
            matches!(c.name().as_str(), "rank" | "trial" | "metric" | "pareto")
                || c.as_materialized_series().n_unique().unwrap_or(2) > 1
        })
        .map(|c| c.name().to_string())
        .collect();
    Ok(df.select(keep)?)
}

/// The swept paths of a trial table (its columns beyond the base ones).
pub fn factors(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !BASE_COLUMNS.contains(&c.as_str()) && !c.starts_with("state_mib_at_"))
        .collect()
}

/// Main effects and two-way interactions of a full grid over the swept paths: for each factor level
/// `effect = mean(level) − grand mean`; for each pair of levels `interaction = mean(cell) − grand −
/// effect_a − effect_b`. `None` when the sweep has fewer than two swept paths or is not a full grid.
pub fn effects(trials: &DataFrame) -> Result<Option<DataFrame>> {
    let names = factors(trials);
    if names.len() < 2 {
        return Ok(None);
    }
    let metric = trials.column("metric")?.f64()?.clone();
    let cols: Vec<StringChunked> = names
        .iter()
        .map(|n| Ok(trials.column(n)?.cast(&DataType::String)?.str()?.clone()))
        .collect::<Result<_>>()?;
    let rows: Vec<(Vec<String>, f64)> = (0..trials.height())
        .filter_map(|i| {
            let m = metric.get(i)?;
            let levels: Option<Vec<String>> =
                cols.iter().map(|c| c.get(i).map(str::to_string)).collect();
            Some((levels?, m))
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let mean = |f: &dyn Fn(&[String]) -> bool| -> Option<f64> {
        let v: Vec<f64> = rows.iter().filter(|(l, _)| f(l)).map(|(_, m)| *m).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let grand = mean(&|_| true).expect("rows exist");
    let levels: Vec<Vec<String>> = (0..names.len())
        .map(|k| {
            let mut l: Vec<String> = rows.iter().map(|(x, _)| x[k].clone()).collect();
            l.sort();
            l.dedup();
            l
        })
        .collect();
    let cells: usize = levels.iter().map(Vec::len).product();
    let mut seen: Vec<&Vec<String>> = rows.iter().map(|(l, _)| l).collect();
    seen.sort();
    seen.dedup();
    if seen.len() != cells {
        return Ok(None); // not a full grid
    }
    let (mut term, mut value, mut n) = (vec![], vec![], vec![]);
    let effect = |k: usize, lv: &str| mean(&|l: &[String]| l[k] == lv).map(|m| m - grand);
    for (k, name) in names.iter().enumerate() {
        for lv in &levels[k] {
            term.push(format!("{name}={lv}"));
            value.push(effect(k, lv));
            n.push(rows.iter().filter(|(l, _)| l[k] == *lv).count() as u32);
        }
    }
    for a in 0..names.len() {
        for b in a + 1..names.len() {
            for la in &levels[a] {
                for lb in &levels[b] {
                    let cell = mean(&|l: &[String]| l[a] == *la && l[b] == *lb);
                    let (ea, eb) = (effect(a, la), effect(b, lb));
                    term.push(format!("{}={la} × {}={lb}", names[a], names[b]));
                    value.push(match (cell, ea, eb) {
                        (Some(c), Some(x), Some(y)) => Some(c - grand - x - y),
                        _ => None,
                    });
                    n.push(
                        rows.iter()
                            .filter(|(l, _)| l[a] == *la && l[b] == *lb)
                            .count() as u32,
                    );
                }
            }
        }
    }
    term.insert(0, "grand mean".into());
    value.insert(0, Some(grand));
    n.insert(0, rows.len() as u32);
    Ok(Some(df!("term" => term, "value" => value, "n" => n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_of_an_additive_grid() {
        // metric = 2 + (lr: -0.1 | +0.1) + (dim: +0.05 | -0.05) + interaction 0.02 on (0.003, 64)
        let lr = ["0.001", "0.001", "0.003", "0.003"];
        let dim = ["32", "64", "32", "64"];
        let metric = [
            2.0 - 0.1 + 0.05,
            2.0 - 0.1 - 0.05,
            2.0 + 0.1 + 0.05,
            2.0 + 0.1 - 0.05 + 0.02,
        ];
        let df = df!(
            "trial" => ["a", "b", "c", "d"],
            "metric" => metric.to_vec(),
            "training.lr" => lr.to_vec(),
            "model_dim" => dim.to_vec(),
        )
        .unwrap();
        let e = effects(&df).unwrap().expect("a full grid");
        let terms = e.column("term").unwrap().str().unwrap().clone();
        let values = e.column("value").unwrap().f64().unwrap().clone();
        let get = |t: &str| -> f64 {
            let i = (0..terms.len())
                .find(|&i| terms.get(i) == Some(t))
                .unwrap_or_else(|| panic!("{t}"));
            values.get(i).unwrap()
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(get("grand mean"), 2.005);
        close(get("training.lr=0.003"), 0.105);
        close(get("model_dim=32"), 0.045);
        // the interaction is spread over the four cells: +0.005 on the diagonal, -0.005 off it
        close(get("training.lr=0.003 × model_dim=64"), 0.005);
        close(get("training.lr=0.001 × model_dim=64"), -0.005);
        // not a full grid: no table
        let partial = df.slice(0, 3);
        assert!(effects(&partial).unwrap().is_none());
    }

    #[test]
    fn pareto_front_of_loss_and_size() {
        let df = df!(
            "trial" => ["a", "b", "c", "d", "e"],
            "metric" => [Some(2.0), Some(1.5), Some(2.5), Some(1.5), None],
            "params" => [100u64, 300, 50, 400, 10],
            "tok_s" => [10.0, 20.0, 30.0, 5.0, 50.0],
        )
        .unwrap();
        let front = |specs: &[&str]| -> Vec<bool> {
            let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
            let out = pareto(&df, &specs).unwrap();
            let c = out.column("pareto").unwrap().bool().unwrap().clone();
            (0..c.len()).map(|i| c.get(i).unwrap()).collect()
        };
        // d ties b on the metric and is larger: dominated; e has no metric
        assert_eq!(
            front(&["metric", "params"]),
            [true, true, true, false, false]
        );
        // tok_s is maximised: c (faster, smaller) dominates a
        assert_eq!(
            front(&["metric", "tok_s"]),
            [false, true, true, false, false]
        );
        assert!(pareto(&df, &["metric".into()]).is_err());
        assert!(pareto(&df, &["metric".into(), "nope".into()]).is_err());
    }
}
