//! Reductions, and top-k routing.

use mixsweep_mlx::{Array, Dtype, Result};
use mixsweep_model::ops::{Softmax, TopK};

/// Softmax accumulated in float32 (MLX's precise mode), in the input's dtype.
pub fn softmax(s: &Softmax, x: &Array) -> Result<Array> {
    x.softmax(s.axis as i32, true)
}

/// Gates and selection of [`TopK`], float32. The rank of each entry is the number of entries of its
/// row that beat it (larger, or equal at a lower index): an `[..., E, E]` comparison, fine for the
/// expert counts of a mixture of experts.
pub fn top_k(t: &TopK, p: &Array) -> Result<Vec<Array>> {
    let p = p.astype(Dtype::F32)?;
    let e = p.dim(-1);
    let fixed = p.stop_gradient()?;
    let me = fixed.expand_dims(-1)?; // [..., E, 1]: entry i
    let other = fixed.expand_dims(-2)?; // [..., 1, E]: entry j
    let idx = Array::arange(0.0, e as f64, 1.0, Dtype::F32)?;
    let lower = idx
        .reshape(&[1, e as i32])?
        .less(&idx.reshape(&[e as i32, 1])?)?; // j < i
    let beats = other.greater(&me)?.astype(Dtype::F32)?;
    let ties = other.equal(&me)?.logical_and(&lower)?.astype(Dtype::F32)?;
    let rank = beats.add(&ties)?.sum(&[-1], false)?;
    let selected = rank
        .less(&Array::scalar(t.k as f32, Dtype::F32)?)?
        .astype(Dtype::F32)?;
    let kept = p.mul(&selected)?;
    let gates = kept.div(&kept.sum(&[-1], true)?)?;
    Ok(vec![gates, selected])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_renormalised_and_breaks_ties_to_the_lower_index() {
        let p = Array::from_f32(&[0.1, 0.4, 0.2, 0.3, 0.25, 0.25, 0.25, 0.25], &[2, 4]).unwrap();
        let out = top_k(&TopK { k: 2 }, &p).unwrap();
        let (g, m) = (out[0].to_vec_f32().unwrap(), out[1].to_vec_f32().unwrap());
        assert_eq!(m, vec![0., 1., 0., 1., 1., 1., 0., 0.]);
        let want = [0.0, 0.4 / 0.7, 0.0, 0.3 / 0.7, 0.5, 0.5, 0.0, 0.0];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{g:?}");
        }
    }
}
