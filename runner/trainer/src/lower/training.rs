//! Dropout and the loss.

use mixsweep_mlx::{Array, Dtype, Result, random, where_};
use mixsweep_model::ops::LoadBalance;

/// Inverted dropout: keeps each element with probability `1 - rate` and scales it by `1 / (1 - rate)`.
/// The mask comes from MLX's threefry bits; a counter-based hash of position and key, fused into the
/// step by `compile`, was measured 5% slower on an H200 (BENCHMARKS.md, nanoGPT's attention dropout).
pub fn dropout(x: &Array, rate: f32, key: &Array) -> Result<Array> {
    let keep = random::bernoulli(1.0 - rate, &x.shape(), key)?;
    let scaled = x.mul_scalar(1.0 / (1.0 - rate))?;
    where_(&keep, &scaled, &Array::scalar(0.0, x.dtype()?)?)
}

/// Mean cross-entropy in float32 of `logits [..., V]` against integer `targets [...]`.
pub fn cross_entropy(logits: &Array, targets: &Array) -> Result<Array> {
    let logits = logits.astype(Dtype::F32)?;
    let lse = logits.logsumexp(&[-1], false)?;
    let picked = logits.take_along_axis(&targets.astype(Dtype::I32)?.expand_dims(-1)?, -1)?;
    let picked = picked.reshape(&lse.shape().iter().map(|&d| d as i32).collect::<Vec<_>>())?;
    lse.sub(&picked)?.mean_all()
}

/// `coef · mean(logsumexp(logits)²)` in float32.
pub fn z_loss(logits: &Array, coef: f32) -> Result<Array> {
    let lse = logits.astype(Dtype::F32)?.logsumexp(&[-1], false)?;
    lse.square()?.mean_all()?.mul_scalar(coef)
}

/// `weight · E · Σ_e mean(p_e) · mean(m_e) / k` in float32.
pub fn load_balance(lb: &LoadBalance, p: &Array, selected: &Array) -> Result<Array> {
    let e = p.dim(-1);
    let rows: Vec<i32> = (0..p.ndim() - 1).map(|a| a as i32).collect();
    let importance = p.astype(Dtype::F32)?.mean(&rows, false)?;
    let load = selected.astype(Dtype::F32)?.mean(&rows, false)?;
    importance
        .mul(&load)?
        .sum_all()?
        .mul_scalar(lb.weight * e as f32 / lb.k as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_loss_is_the_mean_squared_log_partition() {
        let logits = Array::from_f32(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[1, 2, 3]).unwrap();
        let got = z_loss(&logits, 0.5).unwrap().item_f32().unwrap();
        let l0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        let l1 = 3f32.ln();
        assert!(
            (got - 0.5 * (l0 * l0 + l1 * l1) / 2.0).abs() < 1e-5,
            "{got}"
        );
    }

    #[test]
    fn cross_entropy_matches_formula() {
        let logits = Array::from_f32(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[1, 2, 3]).unwrap();
        let targets = Array::from_i32(&[2, 0], &[1, 2]).unwrap();
        let got = cross_entropy(&logits, &targets)
            .unwrap()
            .item_f32()
            .unwrap();
        let l0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        let l1 = 3f32.ln();
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn dropout_zeroes_about_rate_and_rescales() {
        let x = Array::ones(&[100, 100], Dtype::F32).unwrap();
        let y = dropout(&x, 0.25, &random::key(3).unwrap())
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count() as f32 / y.len() as f32;
        assert!((zeros - 0.25).abs() < 0.03, "dropped fraction {zeros}");
        assert!(
            y.iter()
                .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
        );
    }
}
