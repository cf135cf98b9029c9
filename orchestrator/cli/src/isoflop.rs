//! Iso-FLOP analysis of `budget:` sweeps (Hoffmann et al. 2022, approach 2): for each compute
//! budget, the metric of its completed trials against ln(parameters), averaged over seeds per model
//! size and fitted by a least-squares parabola. The parabola's vertex is the compute-optimal size N*
//! for that budget; the tokens it trains on follow from the budget and the FLOPs per token of a model
//! of that size (interpolated log-log between the trials). A fit needs three or more sizes and a
//! parabola that opens upwards; otherwise the row says why there is no minimum.

use anyhow::Result;
use polars::prelude::*;
use std::collections::BTreeMap;

/// The column `results` holds each trial's budget in (its swept value).
pub const BUDGET_COLUMN: &str = mixsweep_sweep::BUDGET_KEY;

/// One budget's fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub budget: f64,
    /// `(params, mean metric over seeds, seeds)` per model size, by size.
    pub sizes: Vec<(f64, f64, usize)>,
    /// `metric = a·x² + b·x + c` with `x = ln(params)`.
    pub coef: Option<[f64; 3]>,
    pub n_opt: Option<f64>,
    pub metric_opt: Option<f64>,
    pub tokens_opt: Option<f64>,
    pub note: String,
}

/// Least-squares `y = a·x² + b·x + c`; `None` for fewer than three distinct x.
pub fn fit_parabola(xs: &[f64], ys: &[f64]) -> Option<[f64; 3]> {
    let mut distinct = xs.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() < 3 {
        return None;
    }
    // centre x for conditioning; shift back at the end
    let mx = xs.iter().sum::<f64>() / xs.len() as f64;
    let mut m = [[0.0f64; 4]; 3];
    for (&x, &y) in xs.iter().zip(ys) {
        let u = x - mx;
        let row = [u * u, u, 1.0];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += row[i] * row[j];
            }
            m[i][3] += row[i] * y;
        }
    }
    let [a, b, c] = solve3(m)?;
    // y = a(x - mx)² + b(x - mx) + c
    Some([a, b - 2.0 * a * mx, a * mx * mx - b * mx + c])
}

/// Gaussian elimination with partial pivoting on an augmented 3×4 system.
fn solve3(mut m: [[f64; 4]; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some([m[0][3] / m[0][0], m[1][3] / m[1][1], m[2][3] / m[2][2]])
}

/// Least-squares line `y = k·x + d`.
fn fit_line(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    Some((sxy / sxx, my - sxy / sxx * mx))
}

fn floats(df: &DataFrame, col: &str) -> Result<Vec<Option<f64>>> {
    let c = df.column(col)?;
    if c.dtype() == &DataType::String {
        let s = c.str()?;
        return Ok((0..s.len())
            .map(|i| s.get(i).and_then(|v| v.parse().ok()))
            .collect());
    }
    let c = c.cast(&DataType::Float64)?;
    let c = c.f64()?;
    Ok((0..c.len()).map(|i| c.get(i)).collect())
}

/// The fits of a ranked trials frame, one per budget; `None` when the sweep has no budgets.
pub fn fits(trials: &DataFrame) -> Result<Option<Vec<Fit>>> {
    if trials.column(BUDGET_COLUMN).is_err() {
        return Ok(None);
    }
    let (budget, params, metric, fpt) = (
        floats(trials, BUDGET_COLUMN)?,
        floats(trials, "params")?,
        floats(trials, "metric")?,
        floats(trials, "flops_per_token")?,
    );
    // budget -> params -> (metric values, FLOPs/token)
    let mut by: BTreeMap<u64, BTreeMap<u64, (Vec<f64>, f64)>> = BTreeMap::new();
    for i in 0..budget.len() {
        let (Some(b), Some(p), Some(m)) = (budget[i], params[i], metric[i]) else {
            continue;
        };
        let e = by
            .entry(b.to_bits())
            .or_default()
            .entry(p as u64)
            .or_default();
        e.0.push(m);
        e.1 = fpt[i].unwrap_or(0.0);
    }
    Ok(Some(
        by.into_iter()
            .map(|(b, sizes)| fit_one(f64::from_bits(b), sizes))
            .collect(),
    ))
}

fn fit_one(budget: f64, sizes: BTreeMap<u64, (Vec<f64>, f64)>) -> Fit {
    let pts: Vec<(f64, f64, usize)> = sizes
        .iter()
        .map(|(p, (m, _))| (*p as f64, m.iter().sum::<f64>() / m.len() as f64, m.len()))
        .collect();
    let xs: Vec<f64> = pts.iter().map(|p| p.0.ln()).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let mut fit = Fit {
        budget,
        sizes: pts.clone(),
        coef: fit_parabola(&xs, &ys),
        n_opt: None,
        metric_opt: None,
        tokens_opt: None,
        note: String::new(),
    };
    match fit.coef {
        None => {
            fit.note = format!(
                "{} model size(s) completed: a fit needs 3 or more",
                pts.len()
            )
        }
        Some([a, ..]) if a <= 0.0 => {
            fit.note = "no minimum: the curve does not open upwards (widen the size range)".into()
        }
        Some([a, b, c]) => {
            let x = -b / (2.0 * a);
            fit.n_opt = Some(x.exp());
            fit.metric_opt = Some(c - b * b / (4.0 * a));
            let (lo, hi) = (xs[0], xs[xs.len() - 1]);
            fit.note = if x < lo || x > hi {
                "minimum outside the sizes tried: extrapolated".into()
            } else {
                "ok".into()
            };
            let logs: Vec<(f64, f64)> = sizes
                .iter()
                .filter(|(_, (_, f))| *f > 0.0)
                .map(|(p, (_, f))| ((*p as f64).ln(), f.ln()))
                .collect();
            let (lx, ly): (Vec<f64>, Vec<f64>) = logs.into_iter().unzip();
            fit.tokens_opt = fit_line(&lx, &ly).map(|(k, d)| budget / (k * x + d).exp());
        }
    }
    fit
}

/// The fits as a table for `results`.
pub fn table(fits: &[Fit]) -> Result<DataFrame> {
    let col = |f: fn(&Fit) -> Option<f64>| fits.iter().map(f).collect::<Vec<_>>();
    Ok(df!(
        "budget_flops" => fits.iter().map(|f| f.budget).collect::<Vec<_>>(),
        "sizes" => fits.iter().map(|f| f.sizes.len() as u32).collect::<Vec<_>>(),
        "trials" => fits.iter().map(|f| f.sizes.iter().map(|s| s.2 as u32).sum::<u32>()).collect::<Vec<_>>(),
        "optimal_params" => col(|f| f.n_opt),
        "optimal_tokens" => col(|f| f.tokens_opt),
        "metric_at_optimum" => col(|f| f.metric_opt),
        "note" => fits.iter().map(|f| f.note.clone()).collect::<Vec<_>>(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parabola_recovers_known_coefficients() {
        let xs: Vec<f64> = (0..7).map(|i| 10.0 + i as f64 * 0.5).collect();
        let ys: Vec<f64> = xs.iter().map(|x| 0.3 * x * x - 7.2 * x + 50.0).collect();
        let [a, b, c] = fit_parabola(&xs, &ys).unwrap();
        assert!((a - 0.3).abs() < 1e-8 && (b + 7.2).abs() < 1e-6 && (c - 50.0).abs() < 1e-5);
        assert!(fit_parabola(&[1.0, 1.0, 2.0], &[0.0, 1.0, 2.0]).is_none());
    }

    #[test]
    fn the_minimum_of_an_iso_flop_curve_is_found() {
        // loss = 0.2 (ln N - ln 3e6)² + 2.5 at one budget, two seeds per size; FLOPs/token = 6N
        let budget = 1e15;
        let sizes: [f64; 5] = [1e6, 2e6, 4e6, 8e6, 16e6];
        let mut trials = BTreeMap::new();
        for n in sizes {
            let l = 0.2 * (n.ln() - 3e6f64.ln()).powi(2) + 2.5;
            trials.insert(n as u64, (vec![l - 0.01, l + 0.01], 6.0 * n));
        }
        let f = fit_one(budget, trials);
        assert_eq!(f.note, "ok");
        assert!((f.n_opt.unwrap() / 3e6 - 1.0).abs() < 1e-6, "{f:?}");
        assert!((f.metric_opt.unwrap() - 2.5).abs() < 1e-9);
        assert!((f.tokens_opt.unwrap() - budget / 18e6).abs() / (budget / 18e6) < 1e-6);
        // two sizes: no fit, and the row says so
        let mut two = BTreeMap::new();
        two.insert(1, (vec![1.0], 6.0));
        two.insert(2, (vec![0.9], 12.0));
        assert!(fit_one(budget, two).note.contains("needs 3"));
    }
}
