//! `mixsweep report SWEEP`: one self-contained static HTML page (figures inlined as SVG, no script,
//! opens offline from a laptop or object storage) plus every figure as SVG and PNG, from storage alone.
//!
//! Figures: validation loss against training tokens and against training FLOPs, training loss
//! against tokens (per trial, coloured by variant, with each variant's seed band and mean), and the
//! metric against parameters with the Pareto front. Tables: the ranked trials (every row of
//! `results`) and, when some variant has two or more seeds, the per-variant means with 95% t
//! intervals and paired comparisons of `results --group-by variant`.
//! With `budget:`, the iso-FLOP curves with their fitted parabolas ([`crate::isoflop`]); and the
//! timeline of the trials per device slot ([`timeline`]); parallel coordinates over the swept numeric
//! paths and the metric ([`parallel`]).

mod parallel;
mod plot;
mod timeline;

use crate::results::{self, Target};
use crate::storage::Storage;
use anyhow::{Context, Result};
use mixsweep_artifacts::MetricsRecord;
use plot::{Curve, Figure, Lines, Scatter};
use polars::prelude::*;
use std::path::{Path, PathBuf};

/// What `report` wrote.
pub struct Written {
    pub html: PathBuf,
    pub figures: Vec<PathBuf>,
}

/// One trial's curves from its `metrics.jsonl`: `(tokens, val)`, `(tokens, train)`, FLOPs/token.
struct Trial {
    id: String,
    group: String,
    val: Vec<(f64, f64)>,
    train: Vec<(f64, f64)>,
    flops_per_token: f64,
}

async fn load(storage: &Storage, id: &str, group: &str, flops_per_token: f64) -> Result<Trial> {
    let text = storage
        .get(&format!("trials/{id}/metrics.jsonl"))
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let records: Vec<MetricsRecord> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let tok = |m: &MetricsRecord| m.tokens as f64;
    let val = records
        .iter()
        .filter_map(|m| Some((tok(m), m.val_loss?)))
        .filter(|p| p.1.is_finite())
        .collect();
    let train = records
        .iter()
        .filter_map(|m| Some((tok(m), m.train_loss?)))
        .filter(|p| p.1.is_finite() && p.0 > 0.0)
        .collect();
    Ok(Trial {
        id: id.to_string(),
        group: group.to_string(),
        val,
        train,
        flops_per_token,
    })
}

fn strings(df: &DataFrame, col: &str) -> Result<Vec<String>> {
    let c = df.column(col)?.cast(&DataType::String)?;
    let c = c.str()?;
    Ok((0..c.len())
        .map(|i| c.get(i).unwrap_or_default().to_string())
        .collect())
}

fn numbers(df: &DataFrame, col: &str) -> Result<Vec<Option<f64>>> {
    let c = df.column(col)?.cast(&DataType::Float64)?;
    let c = c.f64()?;
    Ok((0..c.len()).map(|i| c.get(i)).collect())
}

/// Marks the points no other point beats on both coordinates (both minimised).
pub fn front(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|a| {
            !points
                .iter()
                .any(|b| b.0 <= a.0 && b.1 <= a.1 && (b.0 < a.0 || b.1 < a.1))
        })
        .collect()
}

fn figures(
    t: &Target,
    trials: &[Trial],
    df: &DataFrame,
) -> Result<Vec<(&'static str, String, Figure)>> {
    let curves = |f: &dyn Fn(&Trial) -> Vec<(f64, f64)>| -> Vec<Curve> {
        trials
            .iter()
            .map(|tr| Curve {
                group: tr.group.clone(),
                points: f(tr),
            })
            .filter(|c| !c.points.is_empty())
            .collect()
    };
    let lines = |title: &str, x: &str, y: &str, log_x, curves| {
        Figure::Lines(Lines {
            title: title.into(),
            x_desc: x.into(),
            y_desc: y.into(),
            log_x,
            curves,
        })
    };
    let loss = "loss (nats/token)";
    let mut out = vec![
        (
            "val_loss_tokens",
            "Validation loss against training tokens".to_string(),
            lines(
                "Validation loss vs training tokens",
                "training tokens",
                &format!("validation {loss}"),
                false,
                curves(&|tr| tr.val.clone()),
            ),
        ),
        (
            "train_loss_tokens",
            "Training loss against training tokens".to_string(),
            lines(
                "Training loss vs training tokens",
                "training tokens",
                &format!("training {loss}"),
                false,
                curves(&|tr| tr.train.clone()),
            ),
        ),
        (
            "val_loss_flops",
            "Validation loss against training FLOPs (log scale)".to_string(),
            lines(
                "Validation loss vs training FLOPs",
                "training FLOPs (tokens × FLOPs/token)",
                &format!("validation {loss}"),
                true,
                curves(&|tr| {
                    tr.val
                        .iter()
                        .filter(|p| p.0 > 0.0)
                        .map(|p| (p.0 * tr.flops_per_token, p.1))
                        .collect()
                }),
            ),
        ),
    ];
    let (ids, params, metric) = (
        strings(df, "trial")?,
        numbers(df, "params")?,
        numbers(df, "metric")?,
    );
    let group: std::collections::HashMap<&str, &str> = trials
        .iter()
        .map(|tr| (tr.id.as_str(), tr.group.as_str()))
        .collect();
    let pts: Vec<(f64, f64, String)> = ids
        .iter()
        .zip(params.iter().zip(&metric))
        .filter_map(|(id, (p, m))| {
            Some((
                p.filter(|p| *p > 0.0)?,
                (*m)?,
                group.get(id.as_str())?.to_string(),
            ))
        })
        .collect();
    let sign = if t.goal_max { -1.0 } else { 1.0 };
    let on = front(&pts.iter().map(|p| (p.0, sign * p.1)).collect::<Vec<_>>());
    out.push((
        "pareto_params",
        format!(
            "{} against parameters; filled points are on the Pareto front",
            t.metric
        ),
        Figure::Scatter(Scatter {
            title: format!("{} vs parameters (Pareto front)", t.metric),
            x_desc: "parameters".into(),
            y_desc: t.metric.clone(),
            log_x: true,
            points: pts
                .into_iter()
                .zip(on)
                .map(|((x, y, g), f)| (x, y, g, f))
                .collect(),
        }),
    ));
    if let Some(fits) = crate::isoflop::fits(df)? {
        out.push((
            "isoflop",
            format!(
                "Iso-FLOP curves: {} against parameters per compute budget (seed means) and the fitted parabola in ln(params)",
                t.metric
            ),
            lines(
                &format!("{} vs parameters at equal training FLOPs", t.metric),
                "parameters",
                &t.metric,
                true,
                isoflop_curves(&fits),
            ),
        ));
    }
    Ok(out)
}

/// Per budget: the seed means by size, and the fitted parabola sampled across (and a little
/// beyond) the sizes tried.
fn isoflop_curves(fits: &[crate::isoflop::Fit]) -> Vec<Curve> {
    let mut curves = vec![];
    for f in fits {
        let label = format!("{:.2e} FLOPs", f.budget);
        curves.push(Curve {
            group: label.clone(),
            points: f.sizes.iter().map(|s| (s.0, s.1)).collect(),
        });
        if let (Some([a, b, c]), Some(first), Some(last)) =
            (f.coef, f.sizes.first(), f.sizes.last())
        {
            let (lo, hi) = (first.0.ln() - 0.2, last.0.ln() + 0.2);
            let points = (0..=40)
                .map(|i| lo + (hi - lo) * i as f64 / 40.0)
                .map(|x| (x.exp(), a * x * x + b * x + c))
                .collect();
            curves.push(Curve {
                group: format!("{label} (fit)"),
                points,
            });
        }
    }
    curves
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell(v: AnyValue<'_>) -> String {
    match v {
        AnyValue::Null => "-".into(),
        AnyValue::Float64(f) => format!("{f:.4}"),
        AnyValue::Float32(f) => format!("{f:.4}"),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn table(df: &DataFrame, id: &str) -> Result<String> {
    let mut s = format!("<table id=\"{id}\"><thead><tr>");
    for c in df.get_column_names() {
        s += &format!("<th>{}</th>", escape(c));
    }
    s += "</tr></thead><tbody>\n";
    for i in 0..df.height() {
        s += "<tr>";
        for c in df.columns() {
            s += &format!("<td>{}</td>", escape(&cell(c.get(i)?)));
        }
        s += "</tr>\n";
    }
    Ok(s + "</tbody></table>\n")
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222}\
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}\
th{background:#f3f3f3}figure{margin:1.5em 0}figcaption{color:#555;font-size:14px}svg{max-width:100%;height:auto}";

/// Writes the report of the sweep into `out` (created if missing).
pub async fn report(t: &Target, out: &Path) -> Result<Written> {
    let storage = Storage::open(&t.root)?;
    let df = results::trials_frame(t).await?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (ids, variants) = (strings(&df, "trial")?, strings(&df, "variant")?);
    let fpt = numbers(&df, "flops_per_token")?;
    let mut trials = vec![];
    for ((id, v), f) in ids.iter().zip(&variants).zip(&fpt) {
        trials.push(load(&storage, id, v, f.unwrap_or(0.0)).await?);
    }
    let mut body = String::new();
    let mut files = vec![];
    let mut figs = figures(t, &trials, &df)?;
    let factors = crate::compare::factors(&df);
    if let Some(p) = parallel::parallel(&df, &factors, &t.metric)? {
        figs.push((
            "parallel",
            format!(
                "Each ranked trial across its swept settings and {}, dark blue (best) to orange (worst)",
                t.metric
            ),
            Figure::Parallel(p),
        ));
    }
    if let Some(tl) = timeline::timeline(&storage, &ids).await? {
        figs.push((
            "timeline",
            "Each trial's last attempt from start to end, one row per device slot, coloured by how it ended"
                .to_string(),
            Figure::Timeline(tl),
        ));
    }
    for (stem, caption, fig) in figs {
        let svg = plot::render(&fig, out, stem)?;
        files.extend([
            out.join(format!("{stem}.svg")),
            out.join(format!("{stem}.png")),
        ]);
        body += &format!(
            "<figure id=\"fig-{stem}\">{svg}<figcaption>{}</figcaption></figure>\n",
            escape(&caption)
        );
    }
    body += &format!(
        "<h2>Trials ranked by {}</h2>\n{}",
        escape(&t.metric),
        table(&df, "trials")?
    );
    let groups = crate::compare::compare(&df, "variant", t.goal_max).ok();
    if let Some(c) = groups.filter(|c| c.pairs.height() > 0 || c.groups.height() > 1) {
        body += "<h2>Variants over seeds (mean, 95% t interval)</h2>\n";
        body += &table(&c.groups, "groups")?;
        if c.pairs.height() > 0 {
            body += "<h3>Seed-paired differences (95% t interval, Wilcoxon signed-rank)</h3>\n";
            body += &table(&c.pairs, "pairs")?;
        }
    }
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mixsweep report: {name}</title>\
         <style>{STYLE}</style></head><body>\n<h1>Sweep {name}</h1>\n<p>{n} trials · metric {metric} · storage {root} · \
         mixsweep {version}</p>\n{body}</body></html>\n",
        name = escape(&t.name),
        n = df.height(),
        metric = escape(&t.metric),
        root = escape(&t.root),
        version = env!("CARGO_PKG_VERSION"),
    );
    let path = out.join("report.html");
    std::fs::write(&path, html)?;
    Ok(Written {
        html: path,
        figures: files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_of_points() {
        let pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 3.5), (4.0, 1.0), (4.0, 1.0)];
        assert_eq!(front(&pts), vec![true, true, false, true, true]);
    }

    #[test]
    fn bands_cover_seeds_where_all_reach() {
        let a = Curve {
            group: "g".into(),
            points: vec![(0.0, 4.0), (10.0, 2.0)],
        };
        let b = Curve {
            group: "g".into(),
            points: vec![(0.0, 6.0), (5.0, 4.0), (20.0, 1.0)],
        };
        let band = plot::band(&[&a, &b]);
        // x = 5: a is 3.0 (interpolated), b is 4.0; x = 20: a does not reach it
        assert_eq!(
            band,
            vec![
                (0.0, 4.0, 5.0, 6.0),
                (5.0, 3.0, 3.5, 4.0),
                (10.0, 2.0, 2.5, 3.0)
            ]
        );
    }
}
