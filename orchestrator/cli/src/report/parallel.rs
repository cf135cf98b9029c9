//! The report's parallel-coordinates figure: one vertical axis per swept numeric path (log-scaled
//! where its values are positive and span more than 10x, e.g. learning rates) and one for the
//! metric; each ranked trial is a line across them, coloured from best (dark blue) to worst (orange)
//! by its metric. Shows at a glance which settings the good trials share.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;

/// One axis: its name, whether it is log-scaled, and its value range.
pub struct Axis {
    pub name: String,
    pub log: bool,
    pub lo: f64,
    pub hi: f64,
}

pub struct Parallel {
    pub title: String,
    pub axes: Vec<Axis>,
    /// Per trial: its values on each axis, and its rank among the trials drawn (0 = best).
    pub lines: Vec<(Vec<f64>, usize)>,
}

impl Axis {
    fn new(name: &str, values: &[f64]) -> Axis {
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Axis {
            name: name.to_string(),
            log: lo > 0.0 && hi / lo > 10.0,
            lo,
            hi,
        }
    }

    /// `v` on a 0..1 scale of this axis.
    fn unit(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.ln() } else { x };
        let span = f(self.hi) - f(self.lo);
        if span > 0.0 {
            (f(v) - f(self.lo)) / span
        } else {
            0.5
        }
    }
}

/// The figure for a ranked trials frame: `None` unless one or more swept paths are numeric and vary.
/// `factors` are the swept columns; rows without a metric are left out (the frame is ranked, so the
/// remaining rows are in rank order).
pub fn parallel(df: &DataFrame, factors: &[String], metric: &str) -> Result<Option<Parallel>> {
    let values = |col: &str| -> Result<Vec<Option<f64>>> {
        let c = df.column(col)?.cast(&DataType::Float64)?;
        let c = c.f64()?;
        Ok((0..c.len()).map(|i| c.get(i)).collect())
    };
    let m = values("metric")?;
    let ranked: Vec<usize> = (0..df.height()).filter(|&i| m[i].is_some()).collect();
    let mut columns = vec![];
    for f in factors {
        let Ok(v) = values(f) else { continue };
        let vs: Vec<f64> = ranked.iter().filter_map(|&i| v[i]).collect();
        let varies = vs.iter().any(|x| (x - vs[0]).abs() > 0.0);
        if vs.len() == ranked.len() && !vs.is_empty() && varies {
            columns.push((f.clone(), vs));
        }
    }
    if columns.is_empty() || ranked.len() < 2 {
        return Ok(None);
    }
    columns.push((
        metric.to_string(),
        ranked.iter().map(|&i| m[i].unwrap_or(0.0)).collect(),
    ));
    let axes: Vec<Axis> = columns.iter().map(|(n, v)| Axis::new(n, v)).collect();
    let lines = (0..ranked.len())
        .map(|r| (columns.iter().map(|(_, v)| v[r]).collect(), r))
        .collect();
    Ok(Some(Parallel {
        title: format!("Swept settings and {metric} (parallel coordinates)"),
        axes,
        lines,
    }))
}

/// Best (rank 0) dark blue to worst orange.
fn shade(rank: usize, n: usize) -> RGBColor {
    let t = if n > 1 {
        rank as f64 / (n - 1) as f64
    } else {
        0.0
    };
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(mix(20, 240), mix(60, 140), mix(160, 30))
}

pub fn draw<DB: DrawingBackend>(p: &Parallel, root: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let k = p.axes.len() as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(&p.title, ("sans-serif", 22))
        .margin(24)
        .build_cartesian_2d(-0.3..k - 0.7, -0.12..1.12)
        .map_err(err)?;
    let n = p.lines.len();
    // worst first, so the best lines are drawn on top
    for (values, rank) in p.lines.iter().rev() {
        let pts = values
            .iter()
            .zip(&p.axes)
            .enumerate()
            .map(|(i, (v, a))| (i as f64, a.unit(*v)));
        chart
            .draw_series(LineSeries::new(pts, shade(*rank, n).stroke_width(2)))
            .map_err(err)?;
    }
    let label = ("sans-serif", 14).into_font().color(&BLACK);
    for (i, a) in p.axes.iter().enumerate() {
        let x = i as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, 1.0)],
                BLACK.stroke_width(1),
            )))
            .map_err(err)?;
        let name = if a.log {
            format!("{} (log)", a.name)
        } else {
            a.name.clone()
        };
        for (y, text) in [(1.1, name), (1.03, fmt(a.hi)), (-0.06, fmt(a.lo))] {
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x - 0.05, y),
                    label.clone(),
                )))
                .map_err(err)?;
        }
    }
    Ok(())
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e5 {
        format!("{v:.0}")
    } else if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_take_numeric_varying_paths_and_the_metric() {
        let df = df!(
            "metric" => [Some(2.0), Some(3.0), None],
            "training.lr" => ["0.001", "0.01", "0.1"],
            "model_dim" => ["64", "64", "32"],
            "name" => ["a", "b", "c"],
        )
        .unwrap();
        let factors: Vec<String> = ["training.lr", "model_dim", "name"]
            .map(String::from)
            .into();
        let p = parallel(&df, &factors, "val_loss").unwrap().unwrap();
        // model_dim does not vary among the ranked trials; names are not numbers
        let names: Vec<&str> = p.axes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["training.lr", "val_loss"]);
        assert!(!p.axes[0].log, "a 10x span is not log-scaled");
        assert_eq!(p.lines.len(), 2);
        assert_eq!(p.axes[0].unit(0.01), 1.0);
        let lr = Axis::new("lr", &[1e-4, 1e-3, 1e-2]);
        assert!(lr.log && (lr.unit(1e-3) - 0.5).abs() < 1e-12);
    }
}
