//! Loss curves from `metrics.jsonl`, read at an equal budget: `results --at tokens=2e7` or
//! `--at flops=1e15` compares trials at the same number of training tokens or training FLOPs
//! (tokens × the trial's training FLOPs per token) instead of at their ends, by linear interpolation
//! between the logged points. A trial whose curve does not reach the budget has no value there.

use crate::storage::Storage;
use anyhow::{Result, bail};
use mixsweep_artifacts::{MetricsRecord, Summary};

/// The budget at which curves are read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    Tokens(f64),
    Flops(f64),
}

impl At {
    /// Parses `tokens=2e7` or `flops=1e15`.
    pub fn parse(s: &str) -> Result<At> {
        let (kind, value) = s.split_once('=').unwrap_or((s, ""));
        let v: f64 = match value.trim().parse() {
            Ok(v) if v > 0.0 && f64::is_finite(v) => v,
            _ => bail!(
                "--at {s:?}: the budget must be a positive number, e.g. tokens=2e7 or flops=1e15"
            ),
        };
        match kind.trim() {
            "tokens" => Ok(At::Tokens(v)),
            "flops" => Ok(At::Flops(v)),
            other => bail!("--at {s:?}: unknown budget {other:?}; use tokens=N or flops=N"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            At::Tokens(v) => format!("at {v:.3e} training tokens"),
            At::Flops(v) => format!("at {v:.3e} training FLOPs"),
        }
    }
}

/// The curve's value at `x` by linear interpolation between neighbouring points (sorted by x);
/// `None` outside the logged range.
pub fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let i = points.iter().position(|p| p.0 >= x)?;
    let (x1, y1) = points[i];
    if x1 == x {
        return Some(y1);
    }
    let (x0, y0) = *points.get(i.checked_sub(1)?)?;
    Some(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
}

/// The points `(budget, metric)` of a trial's curve: validation losses for `val_loss`, training
/// losses for `train_loss`.
pub fn points(
    records: &[MetricsRecord],
    metric: &str,
    at: At,
    s: &Summary,
) -> Result<Vec<(f64, f64)>> {
    if !matches!(metric, "val_loss" | "train_loss") {
        bail!("--at reads loss curves: use it with metric val_loss or train_loss (not {metric:?})");
    }
    let per_token = match at {
        At::Tokens(_) => 1.0,
        At::Flops(_) => s.flops_per_token,
    };
    let mut pts: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|m| {
            let y = match metric {
                "val_loss" => m.val_loss?,
                _ => m.train_loss?,
            };
            Some((m.tokens as f64 * per_token, y))
        })
        .filter(|p| p.1.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(pts)
}

/// The trial's metric at the budget, from its `metrics.jsonl` in storage.
pub async fn metric_at(
    storage: &Storage,
    id: &str,
    s: &Summary,
    metric: &str,
    at: At,
) -> Result<Option<f64>> {
    let Some(bytes) = storage.get(&format!("trials/{id}/metrics.jsonl")).await? else {
        return Ok(None);
    };
    let records: Vec<MetricsRecord> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let x = match at {
        At::Tokens(v) | At::Flops(v) => v,
    };
    Ok(interpolate(&points(&records, metric, at, s)?, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_inside_and_refuses_outside() {
        let p = [(100.0, 4.0), (200.0, 3.0), (400.0, 2.0)];
        assert_eq!(interpolate(&p, 150.0), Some(3.5));
        assert_eq!(interpolate(&p, 300.0), Some(2.5));
        assert_eq!(interpolate(&p, 200.0), Some(3.0));
        assert_eq!(interpolate(&p, 100.0), Some(4.0));
        assert_eq!(interpolate(&p, 50.0), None);
        assert_eq!(interpolate(&p, 401.0), None);
    }

    #[test]
    fn budgets_parse_with_fixes() {
        assert_eq!(At::parse("tokens=2e7").unwrap(), At::Tokens(2e7));
        assert_eq!(At::parse("flops=1e15").unwrap(), At::Flops(1e15));
        assert!(
            At::parse("steps=10")
                .unwrap_err()
                .to_string()
                .contains("tokens=N")
        );
        assert!(At::parse("tokens=-1").is_err());
    }

    #[test]
    fn flops_scale_tokens_by_the_trials_cost() {
        let rec = |tokens, val| MetricsRecord {
            tokens,
            val_loss: val,
            train_loss: Some(5.0),
            ..Default::default()
        };
        let records = [rec(1000, Some(3.0)), rec(1500, None), rec(2000, Some(2.0))];
        let s = Summary {
            flops_per_token: 10.0,
            ..Default::default()
        };
        let pts = points(&records, "val_loss", At::Flops(1.0), &s).unwrap();
        assert_eq!(pts, vec![(10000.0, 3.0), (20000.0, 2.0)]);
        assert!(points(&records, "mean_tok_s", At::Tokens(1.0), &s).is_err());
    }
}
