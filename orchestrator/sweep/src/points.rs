//! The point space of a variant: axes (grid axes, zip rows, random samples, the variant's own grid),
//! enumerated by index in mixed radix, the last axis fastest. Nothing is materialised: point `i` is
//! built when asked for, so a million-point sweep costs its axes, not its points.

use crate::SweepError;
use crate::spec::{Distribution, RandomSpec, SweepSpec};
use mixsweep_model::rng::SplitMix64;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// The (path, value) pairs one point sets.
pub type Row = Vec<(Arc<str>, Value)>;

/// A product of axes; each axis is a list of rows (a grid axis sets one path per row, a zip or random
/// row several).
#[derive(Debug, Clone, Default)]
pub struct Space {
    axes: Vec<Vec<Row>>,
}

impl Space {
    /// The number of points (1 for no axes: the base config alone).
    pub fn len(&self) -> usize {
        self.axes.iter().map(Vec::len).product()
    }

    /// Whether no point exists (an axis without rows).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows of point `i`, slowest axis first.
    pub fn point(&self, mut i: usize) -> Row {
        let mut rows: Vec<&Row> = Vec::with_capacity(self.axes.len());
        for axis in self.axes.iter().rev() {
            rows.push(&axis[i % axis.len()]);
            i /= axis.len();
        }
        rows.into_iter().rev().flatten().cloned().collect()
    }

    /// Adds a grid axis (fastest so far). `values` must not be empty.
    pub fn push_grid(&mut self, path: &str, values: &[Value]) {
        let p: Arc<str> = path.into();
        self.axes.push(
            values
                .iter()
                .map(|v| vec![(p.clone(), v.clone())])
                .collect(),
        );
    }

    /// The sweep-wide axes: grid axes (in key order), zip rows, random samples.
    pub fn of_sweep(spec: &SweepSpec, file: &Path, src: &str) -> Result<Space, SweepError> {
        let mut space = Space::default();
        for (path, values) in &spec.grid {
            if values.is_empty() {
                return Err(SweepError::at(
                    file,
                    src,
                    path,
                    format!("grid.{path}: the list of values is empty"),
                ));
            }
            space.push_grid(path, values);
        }
        if !spec.zip.is_empty() {
            let lens: Vec<usize> = spec.zip.values().map(Vec::len).collect();
            if lens.iter().any(|&l| l != lens[0]) || lens[0] == 0 {
                let desc: Vec<String> = spec
                    .zip
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.len()))
                    .collect();
                return Err(SweepError::at(
                    file,
                    src,
                    "zip",
                    format!(
                        "zip lists must have the same length, at least 1 ({})",
                        desc.join(", ")
                    ),
                ));
            }
            let rows = (0..lens[0])
                .map(|i| {
                    spec.zip
                        .iter()
                        .map(|(k, v)| (Arc::from(k.as_str()), v[i].clone()))
                        .collect()
                })
                .collect();
            space.axes.push(rows);
        }
        if let Some(r) = &spec.random {
            space.axes.push(random_rows(r, file, src)?);
        }
        Ok(space)
    }
}

/// A JSON number, as an integer when it is integral (so `4.0` and `4` hash alike).
pub fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// The samples of random search, drawn once from the sampler's own seed.
fn random_rows(r: &RandomSpec, file: &Path, src: &str) -> Result<Vec<Row>, SweepError> {
    if r.samples == 0 {
        return Err(SweepError::at(
            file,
            src,
            "samples",
            "random.samples must be > 0".into(),
        ));
    }
    let mut rng = SplitMix64::new(r.seed);
    let mut rows = Vec::with_capacity(r.samples);
    for _ in 0..r.samples {
        let mut row = vec![];
        for (path, d) in &r.params {
            let v = match d {
                Distribution::Choice(c) if !c.is_empty() => {
                    c[(rng.next_u64() % c.len() as u64) as usize].clone()
                }
                Distribution::Uniform([lo, hi]) if lo <= hi => {
                    number(lo + (hi - lo) * rng.next_f64())
                }
                Distribution::LogUniform([lo, hi]) if *lo > 0.0 && lo <= hi => {
                    number((lo.ln() + (hi.ln() - lo.ln()) * rng.next_f64()).exp())
                }
                Distribution::IntUniform([lo, hi]) if lo <= hi => {
                    let span = (*hi as i128 - *lo as i128 + 1) as u128;
                    Value::from((*lo as i128 + (rng.next_u64() as u128 % span) as i128) as i64)
                }
                _ => {
                    return Err(SweepError::at(
                        file,
                        src,
                        path,
                        format!(
                            "random.params.{path}: empty choice or bounds out of order (log_uniform needs 0 < lo <= hi)"
                        ),
                    ));
                }
            };
            row.push((Arc::from(path.as_str()), v));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_mixed_radix_with_the_last_axis_fastest() {
        let mut s = Space::default();
        assert_eq!(s.len(), 1);
        assert!(s.point(0).is_empty());
        s.push_grid("a", &[Value::from(1), Value::from(2)]);
        s.push_grid("b", &[Value::from(10), Value::from(20), Value::from(30)]);
        assert_eq!(s.len(), 6);
        let pairs: Vec<(i64, i64)> = (0..6)
            .map(|i| {
                let p = s.point(i);
                (p[0].1.as_i64().unwrap(), p[1].1.as_i64().unwrap())
            })
            .collect();
        assert_eq!(
            pairs,
            [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30)]
        );
    }
}
