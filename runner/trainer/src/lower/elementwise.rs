//! Elementwise ops: unary functions, broadcasting binary ops (comparisons give 0/1 in the input's
//! dtype), ops with a scalar, and selection.

use mixsweep_mlx::{Array, Dtype, Result, where_};
use mixsweep_model::ops::{BinaryKind, Scalar, ScalarKind, UnaryKind};

pub fn unary(x: &Array, kind: UnaryKind) -> Result<Array> {
    match kind {
        UnaryKind::Neg => x.neg(),
        UnaryKind::Exp => x.exp(),
        UnaryKind::Log => x.log(),
        UnaryKind::Sqrt => x.sqrt(),
        UnaryKind::Rsqrt => x.rsqrt(),
        UnaryKind::Reciprocal => Array::scalar(1.0, x.dtype()?)?.div(x),
        UnaryKind::Square => x.square(),
        UnaryKind::Abs => x.abs(),
        UnaryKind::Tanh => x.tanh(),
        UnaryKind::Sigmoid => x.sigmoid(),
        UnaryKind::Sin => x.sin(),
        UnaryKind::Cos => x.cos(),
        UnaryKind::Silu => x.mul(&x.sigmoid()?),
        UnaryKind::Gelu => x
            .mul(
                &x.mul_scalar(std::f32::consts::FRAC_1_SQRT_2)?
                    .erf()?
                    .add_scalar(1.0)?,
            )?
            .mul_scalar(0.5),
        UnaryKind::GeluTanh => {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let inner = x
                .add(&x.mul(x)?.mul(x)?.mul_scalar(0.044715)?)?
                .mul_scalar(0.797_884_6)?;
            x.mul(&inner.tanh()?.add_scalar(1.0)?)?.mul_scalar(0.5)
        }
        UnaryKind::Relu => x.maximum_scalar(0.0),
        UnaryKind::LeakyReluSquared { slope } => x.maximum(&x.mul_scalar(slope)?)?.square(),
        UnaryKind::Softplus => x.logaddexp(&Array::scalar(0.0, x.dtype()?)?),
        UnaryKind::Softcap { cap } => x.mul_scalar(1.0 / cap)?.tanh()?.mul_scalar(cap),
    }
}

fn as_number(mask: Array, like: &Array) -> Result<Array> {
    let dt = like.dtype()?;
    mask.astype(if dt.is_float() { dt } else { Dtype::F32 })
}

pub fn binary(kind: BinaryKind, a: &Array, b: &Array) -> Result<Array> {
    match kind {
        BinaryKind::Add => a.add(b),
        BinaryKind::Sub => a.sub(b),
        BinaryKind::Mul => a.mul(b),
        BinaryKind::Div => a.div(b),
        BinaryKind::Max => a.maximum(b),
        BinaryKind::Min => a.minimum(b),
        BinaryKind::Pow => a.power(b),
        BinaryKind::Lt => as_number(a.less(b)?, a),
        BinaryKind::Gt => as_number(a.greater(b)?, a),
        BinaryKind::Le => as_number(a.less_equal(b)?, a),
        BinaryKind::Ge => as_number(a.greater_equal(b)?, a),
        BinaryKind::Eq => as_number(a.equal(b)?, a),
    }
}

pub fn scalar(s: &Scalar, x: &Array) -> Result<Array> {
    let c = Array::scalar(s.value, x.dtype()?)?;
    match s.kind {
        ScalarKind::Mul => x.mul_scalar(s.value),
        ScalarKind::Add => x.add_scalar(s.value),
        ScalarKind::Pow => x.power(&c),
        ScalarKind::Max => x.maximum(&c),
        ScalarKind::Min => x.minimum(&c),
        ScalarKind::Lt => as_number(x.less(&c)?, x),
        ScalarKind::Gt => as_number(x.greater(&c)?, x),
        ScalarKind::Le => as_number(x.less_equal(&c)?, x),
        ScalarKind::Ge => as_number(x.greater_equal(&c)?, x),
        ScalarKind::Eq => as_number(x.equal(&c)?, x),
    }
}

/// `cond != 0 ? a : b`.
pub fn select(inputs: &[Array]) -> Result<Array> {
    let cond = &inputs[0];
    let cond = if cond.dtype()? == Dtype::Bool {
        cond.clone()
    } else {
        cond.equal(&Array::scalar(0.0, cond.dtype()?)?)?
            .logical_not()?
    };
    where_(&cond, &inputs[1], &inputs[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_formulas() {
        let x = Array::from_f32(&[-1.0, 0.5, 2.0], &[3]).unwrap();
        let get = |k| unary(&x, k).unwrap().to_vec_f32().unwrap();
        let close = |a: Vec<f32>, b: [f32; 3]| {
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        };
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        close(
            get(UnaryKind::Silu),
            [-sig(-1.0), 0.5 * sig(0.5), 2.0 * sig(2.0)],
        );
        close(get(UnaryKind::Relu), [0.0, 0.5, 2.0]);
        close(
            get(UnaryKind::LeakyReluSquared { slope: 0.5 }),
            [0.25, 0.25, 4.0],
        );
        close(
            get(UnaryKind::Softplus),
            [
                (1.0 + (-1f32).exp()).ln(),
                (1.0 + 0.5f32.exp()).ln(),
                (1.0 + 2f32.exp()).ln(),
            ],
        );
        // gelu(x) = x Φ(x): Φ(-1) = 0.158655, Φ(0.5) = 0.691462, Φ(2) = 0.977250
        close(
            get(UnaryKind::Gelu),
            [-0.158_655, 0.5 * 0.691_462, 2.0 * 0.977_250],
        );
        close(get(UnaryKind::GeluTanh), [-0.158_808, 0.345_714, 1.954_598]);
        close(
            get(UnaryKind::Softcap { cap: 1.5 }),
            [
                1.5 * (-1.0f32 / 1.5).tanh(),
                1.5 * (0.5f32 / 1.5).tanh(),
                1.5 * (2.0f32 / 1.5).tanh(),
            ],
        );
        close(get(UnaryKind::Reciprocal), [-1.0, 2.0, 0.5]);
    }

    #[test]
    fn comparisons_are_numbers_and_where_reads_nonzero() {
        let a = Array::from_f32(&[1.0, 2.0, 3.0], &[3]).unwrap();
        let b = Array::from_f32(&[2.0, 2.0, 2.0], &[3]).unwrap();
        let lt = binary(BinaryKind::Lt, &a, &b).unwrap();
        assert_eq!(lt.to_vec_f32().unwrap(), vec![1.0, 0.0, 0.0]);
        let ge = scalar(
            &Scalar {
                kind: ScalarKind::Ge,
                value: 2.0,
            },
            &a,
        )
        .unwrap();
        assert_eq!(ge.to_vec_f32().unwrap(), vec![0.0, 1.0, 1.0]);
        let pick = select(&[lt, a.clone(), b.clone()]).unwrap();
        assert_eq!(pick.to_vec_f32().unwrap(), vec![1.0, 2.0, 2.0]);
    }
}
