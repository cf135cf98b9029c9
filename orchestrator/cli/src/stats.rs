//! Statistics for comparing trials over seeds: mean with a Student-t 95% interval, and for two
//! groups the seed-paired difference with its interval and the Wilcoxon signed-rank test.
//!
//! The Wilcoxon p-value is exact (the null distribution of the rank sum enumerated) when the
//! non-zero differences have no tied magnitudes and number at most 50 (as `scipy.stats.wilcoxon`'s
//! default); otherwise it is the normal approximation with the tie correction and no continuity
//! correction (scipy's `method="approx"`; scipy's default treats ties differently). Zero differences are dropped (scipy's
//! `zero_method="wilcox"`). Two-sided throughout.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Mean, sample standard deviation and a 95% Student-t interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` for one value.
    pub std: Option<f64>,
    /// `mean ± t_{0.975, n−1} · std / √n`; `None` for one value.
    pub ci95: Option<(f64, f64)>,
}

impl Interval {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Interval> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Some(Interval {
                n,
                mean,
                std: None,
                ci95: None,
            });
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let std = var.sqrt();
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .expect("n > 1 gives a valid t distribution")
            .inverse_cdf(0.975);
        let half = t * std / (n as f64).sqrt();
        Some(Interval {
            n,
            mean,
            std: Some(std),
            ci95: Some((mean - half, mean + half)),
        })
    }
}

/// The Wilcoxon signed-rank test of paired differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wilcoxon {
    /// Non-zero differences used.
    pub n: usize,
    /// `min(W+, W−)`, scipy's two-sided statistic.
    pub statistic: f64,
    pub p: f64,
    pub exact: bool,
}

/// Ranks of `values` (1-based, ties get their average rank).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = avg;
        }
        i = j + 1;
    }
    out
}

/// `P(W+ ≤ w)` under the null for `n` untied ranks: the count of sign patterns whose positive
/// ranks sum to at most `w`, over `2^n`.
fn exact_cdf(n: usize, w: usize) -> f64 {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0f64; max + 1];
    counts[0] = 1.0;
    for r in 1..=n {
        for s in (r..=max).rev() {
            counts[s] += counts[s - r];
        }
    }
    let below: f64 = counts[..=w.min(max)].iter().sum();
    below / 2f64.powi(n as i32)
}

/// The two-sided Wilcoxon signed-rank test of `diffs`; `None` when every difference is zero.
pub fn wilcoxon(diffs: &[f64]) -> Option<Wilcoxon> {
    let d: Vec<f64> = diffs.iter().copied().filter(|x| *x != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return None;
    }
    let mags: Vec<f64> = d.iter().map(|x| x.abs()).collect();
    let r = ranks(&mags);
    let w_plus: f64 = d
        .iter()
        .zip(&r)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let statistic = w_plus.min(total - w_plus);
    let tied = r.iter().any(|x| x.fract() != 0.0);
    if !tied && n <= 50 {
        let p = (2.0 * exact_cdf(n, statistic.round() as usize)).min(1.0);
        return Some(Wilcoxon {
            n,
            statistic,
            p,
            exact: true,
        });
    }
    // normal approximation with the tie correction
    let mean = total / 2.0;
    let mut var = (n * (n + 1) * (2 * n + 1)) as f64 / 24.0;
    let mut sorted = r.clone();
    sorted.sort_by(f64::total_cmp);
    let mut i = 0;
    while i < sorted.len() {
        let j = sorted[i..].iter().take_while(|x| **x == sorted[i]).count();
        let t = j as f64;
        var -= (t * t * t - t) / 48.0;
        i += j;
    }
    let z = (statistic - mean) / var.sqrt();
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    let p = (2.0 * normal.cdf(z)).min(1.0);
    Some(Wilcoxon {
        n,
        statistic,
        p,
        exact: false,
    })
}

/// The smallest two-sided p-value an exact Wilcoxon test can give with `n` pairs (`2 / 2^n`).
pub fn smallest_p(n: usize) -> f64 {
    (2.0 / 2f64.powi(n as i32)).min(1.0)
}

/// A comparison of two groups over the seeds both have: `a − b` per seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub diff: Interval,
    pub wilcoxon: Option<Wilcoxon>,
}

impl Paired {
    pub fn of(diffs: &[f64]) -> Option<Paired> {
        Some(Paired {
            diff: Interval::of(diffs)?,
            wilcoxon: wilcoxon(diffs),
        })
    }

    /// What may be claimed at the 5% level, in words.
    pub fn verdict(&self) -> String {
        let n = self.diff.n;
        if n < 2 {
            return format!("n={n} pair: no interval, no test");
        }
        let floor = smallest_p(n);
        if floor > 0.05 {
            return format!("n={n} pairs: too few for p < 0.05 (smallest possible p = {floor:.3})");
        }
        let ci_excludes_zero = self.diff.ci95.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0);
        match self.wilcoxon {
            Some(w) if w.p < 0.05 && ci_excludes_zero => {
                "differ (p < 0.05, interval excludes 0)".into()
            }
            Some(w) if w.p < 0.05 => {
                "differ by the rank test (p < 0.05); the t interval includes 0".into()
            }
            _ if ci_excludes_zero => "interval excludes 0, rank test p >= 0.05".into(),
            _ => "no significant difference".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    #[test]
    fn t_interval_matches_scipy() {
        // scipy.stats.t.interval(0.95, 4, loc=mean, scale=sem) for [1, 2, 3, 4, 6]
        let i = Interval::of(&[1.0, 2.0, 3.0, 4.0, 6.0]).unwrap();
        close(i.mean, 3.2, 1e-12);
        close(i.std.unwrap(), 1.923_538_406_167_134_5, 1e-12);
        let (lo, hi) = i.ci95.unwrap();
        close(lo, 0.811_611_611_900_020_1, 1e-9);
        close(hi, 5.588_388_388_099_981, 1e-9);
        assert_eq!(Interval::of(&[2.0]).unwrap().ci95, None);
        assert_eq!(Interval::of(&[]), None);
    }

    #[test]
    fn exact_wilcoxon_matches_scipy() {
        // scipy.stats.wilcoxon([0.5, -0.2, 1.1, 0.9, 0.3, 0.05]): statistic 2.0, pvalue 0.09375
        let w = wilcoxon(&[0.5, -0.2, 1.1, 0.9, 0.3, 0.05]).unwrap();
        assert!(w.exact);
        close(w.statistic, 2.0, 0.0);
        close(w.p, 0.09375, 1e-12);
        // all positive with n = 5: the smallest exact p
        let w = wilcoxon(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        close(w.p, 0.0625, 1e-12);
        close(smallest_p(5), 0.0625, 1e-12);
        // zeros are dropped
        assert_eq!(wilcoxon(&[0.0, 1.0, 2.0]).unwrap().n, 2);
        assert_eq!(wilcoxon(&[0.0, 0.0]), None);
    }

    #[test]
    fn tied_magnitudes_use_the_normal_approximation() {
        // scipy.stats.wilcoxon([1, -1, 2, 2, 3, 4], method="approx"): 1.5, 0.057779571123597245
        let w = wilcoxon(&[1.0, -1.0, 2.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(!w.exact);
        close(w.statistic, 1.5, 0.0);
        close(w.p, 0.057_779_571_123_597_245, 1e-9);
    }

    #[test]
    fn verdicts_say_when_n_is_too_small() {
        let p = Paired::of(&[0.1, 0.2, 0.15]).unwrap();
        assert!(p.verdict().contains("too few"), "{}", p.verdict());
        let p = Paired::of(&[0.1, 0.2, 0.15, 0.12, 0.18, 0.11]).unwrap();
        assert!(p.verdict().starts_with("differ"), "{}", p.verdict());
    }
}
