//! Quantization-aware training (`training.qat: int8 | int6`, from step `qat_start`): the forward pass
//! sees each quantizable weight (rank 2, >= 256 elements: what `--quantize` exports) fake-quantized
//! per row with an abs-max scale, and gradients pass straight through to the float weights:
//! `w_eff = w + stop_gradient(fq(w) - w)`, with `fq(w) = round(w / s) · s`, `s = max(max|row| / 127,
//! 1/127)`, `round(·)` clamped to `[-127, 127]` (int6: multiples of 4 in `[-128, 124]`). Rounding is
//! half to even here and half away from zero in the export (a tie differs by one step).

use crate::quantize::{Bits, Scheme};
use mixsweep_mlx::{Array, Result};
use mixsweep_model::ir::WeightSpec;

/// Which weights are fake-quantized and how.
#[derive(Debug, Clone)]
pub struct Qat {
    pub bits: Bits,
    /// Per weight: whether it is quantized.
    pub applies: Vec<bool>,
}

impl Qat {
    pub fn new(bits: Bits, weights: &[WeightSpec]) -> Qat {
        Qat {
            bits,
            applies: weights.iter().map(|w| Scheme::applies(&w.shape)).collect(),
        }
    }

    /// The weights the forward pass uses: fake-quantized where `on` (a scalar 0/1 array) is 1.
    pub fn effective(&self, params: &[Array], on: &Array) -> Result<Vec<Array>> {
        params
            .iter()
            .zip(&self.applies)
            .map(|(p, &q)| {
                if q {
                    ste(p, self.bits, on)
                } else {
                    Ok(p.clone())
                }
            })
            .collect()
    }
}

/// Per-row fake quantization of a `[rows, cols]` array (its value; no gradient of its own).
pub fn fake_quantize(w: &Array, bits: Bits) -> Result<Array> {
    let scale = w
        .abs()?
        .max(&[1], true)?
        .mul_scalar(1.0 / 127.0)?
        .maximum_scalar(1.0 / 127.0)?;
    let q = w.div(&scale)?.round()?.clip(-127.0, 127.0)?;
    let q = match bits {
        Bits::Int8 => q,
        Bits::Int6 => q
            .mul_scalar(0.25)?
            .round()?
            .mul_scalar(4.0)?
            .clip(-128.0, 124.0)?,
    };
    q.mul(&scale)
}

/// `w + on · stop_gradient(fq(w) - w)`: the value of `fq(w)` (when on), the gradient of `w`.
fn ste(w: &Array, bits: Bits, on: &Array) -> Result<Array> {
    let delta = fake_quantize(w, bits)?.sub(w)?.stop_gradient()?;
    w.add(&delta.mul(&on.astype(w.dtype()?)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixsweep_mlx::{Dtype, value_and_grad};

    fn w() -> Array {
        let v: Vec<f32> = (0..16 * 32)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1 + i / 32) as f32)
            .collect();
        Array::from_f32(&v, &[16, 32]).unwrap()
    }

    #[test]
    fn fake_quantization_matches_the_export_per_row() {
        let (a, host) = (w(), w().to_vec_f32().unwrap());
        let fq = fake_quantize(&a, Bits::Int8).unwrap().to_vec_f32().unwrap();
        for (r, (row, got)) in host.chunks(32).zip(fq.chunks(32)).enumerate() {
            let s = (row.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0).max(1.0 / 127.0);
            for (x, y) in row.iter().zip(got) {
                // on the grid of the row's scale, and the nearest point of it (abs-max: nothing clips)
                let q = y / s;
                assert!(
                    (q - q.round()).abs() < 1e-3 && (y - x).abs() <= s / 2.0 + 1e-5,
                    "row {r}: {x} -> {y} (scale {s})"
                );
            }
        }
        let fq6 = fake_quantize(&a, Bits::Int6).unwrap().to_vec_f32().unwrap();
        for (row, got) in host.chunks(32).zip(fq6.chunks(32)) {
            let s = (row.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0).max(1.0 / 127.0);
            assert!(got.iter().all(|y| {
                let q = (y / s).round() as i32;
                q % 4 == 0 && (-128..=124).contains(&q)
            }));
        }
    }

    #[test]
    fn gradients_pass_straight_through() {
        let qat = Qat {
            bits: Bits::Int8,
            applies: vec![true],
        };
        let c = Array::from_f32(
            &(0..16 * 32)
                .map(|i| (i % 7) as f32 - 3.0)
                .collect::<Vec<_>>(),
            &[16, 32],
        )
        .unwrap();
        for on in [0.0f32, 1.0] {
            let flag = Array::scalar(on, Dtype::F32).unwrap();
            let (vals, grads) = value_and_grad(
                |ins| {
                    Ok(vec![
                        qat.effective(&ins[..1], &flag)?[0].mul(&c)?.sum_all()?,
                    ])
                },
                &[w()],
                &[0],
            )
            .unwrap();
            assert_eq!(
                grads[0].to_vec_f32().unwrap(),
                c.to_vec_f32().unwrap(),
                "d/dw = c whether or not quantizing"
            );
            let plain = w().mul(&c).unwrap().sum_all().unwrap().item_f32().unwrap();
            let got = vals[0].item_f32().unwrap();
            assert_eq!(
                on == 0.0,
                (got - plain).abs() < 1e-4,
                "on={on}: {got} vs {plain}"
            );
        }
    }
}
