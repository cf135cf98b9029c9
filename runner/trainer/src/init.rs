//! Host-side weight initialisation from the IR's init rules and the training seed. Runs on the CPU
//! in Rust, so the same seed gives bit-identical initial weights on every device.

use crate::rng::{SplitMix64, derive};
use mixsweep_model::ir::{Init, WeightSpec};

/// Initial values of every weight, in program order. Weight `i` draws from its own stream
/// (`derive(seed, i)`), so adding a weight does not change the others.
pub fn initial_weights(weights: &[WeightSpec], seed: u64) -> Vec<Vec<f32>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| init_one(w, derive(seed, 1000 + i as u64)))
        .collect()
}

fn init_one(w: &WeightSpec, seed: u64) -> Vec<f32> {
    let n = w.numel();
    let mut rng = SplitMix64::new(seed);
    match w.init {
        Init::Constant(c) => vec![c; n],
        Init::XavierUniform => {
            let (fan_in, fan_out) = match w.shape.as_slice() {
                [a, b] => (*a, *b),
                [a] => (*a, *a),
                s => (s[0], s[1..].iter().product()),
            };
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect()
        }
        Init::Normal { std } => (0..n)
            .map(|_| (rng.next_normal() * std as f64) as f32)
            .collect(),
        Init::TruncatedNormal { std } => (0..n)
            .map(|_| {
                loop {
                    // resample outside ±2σ (as torch.nn.init.trunc_normal_ with a = -2σ, b = 2σ)
                    let z = rng.next_normal();
                    if z.abs() <= 2.0 {
                        break (z * std as f64) as f32;
                    }
                }
            })
            .collect(),
        Init::Rows { first, rest } => {
            let cols = w.shape.iter().skip(1).product::<usize>().max(1);
            (0..n)
                .map(|j| if j < cols { first } else { rest })
                .collect()
        }
        Init::Uniform { bound } => (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound as f64) as f32)
            .collect(),
        Init::UniformRange { lo, hi } => (0..n)
            .map(|_| (lo as f64 + rng.next_f64() * (hi - lo) as f64) as f32)
            .collect(),
        Init::Ramp { from, to, power } => {
            let len = *w.shape.last().expect("weights have a shape");
            let span = (len.max(2) - 1) as f32;
            (0..n)
                .map(|j| from + (to - from) * ((j % len) as f32 / span).powf(power))
                .collect()
        }
        Init::MambaALog => {
            let state = *w.shape.last().expect("a_log is 2-D");
            (0..n).map(|j| ((j % state) as f32 + 1.0).ln()).collect()
        }
        Init::MambaDtBias { dt_min, dt_max } => (0..n)
            .map(|_| {
                let (lo, hi) = ((dt_min as f64).ln(), (dt_max as f64).ln());
                let dt = (lo + rng.next_f64() * (hi - lo)).exp().max(1e-4);
                // inverse softplus: dt + log(1 - exp(-dt))
                (dt + (-(-dt).exp_m1()).ln()) as f32
            })
            .collect(),
    }
}

/// Host weights (in the program's weight order) as device arrays of their declared shapes.
pub fn upload(
    weights: &[mixsweep_model::ir::WeightSpec],
    host: &[Vec<f32>],
) -> mixsweep_mlx::Result<Vec<mixsweep_mlx::Array>> {
    weights
        .iter()
        .zip(host)
        .map(|(s, v)| mixsweep_mlx::Array::from_f32(v, &s.shape))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixsweep_model::ir::ParamGroup;

    fn spec(shape: &[usize], init: Init) -> WeightSpec {
        WeightSpec {
            name: "w".into(),
            shape: shape.to_vec(),
            init,
            group: ParamGroup::Matrix,
            decay: true,
        }
    }

    #[test]
    fn xavier_bounds_and_spread() {
        let v = init_one(&spec(&[100, 300], Init::XavierUniform), 1);
        let bound = (6.0f32 / 400.0).sqrt();
        assert!(v.iter().all(|x| x.abs() <= bound));
        let var: f32 = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
        // variance of U(-b, b) is b^2/3
        assert!(
            (var - bound * bound / 3.0).abs() < 0.05 * bound * bound,
            "var {var}"
        );
    }

    #[test]
    fn dt_bias_inverts_softplus_into_range() {
        let v = init_one(
            &spec(
                &[512],
                Init::MambaDtBias {
                    dt_min: 0.001,
                    dt_max: 0.1,
                },
            ),
            3,
        );
        for b in v {
            let dt = (b as f64).exp().ln_1p();
            assert!((0.00099..=0.1001).contains(&dt), "softplus(bias) = {dt}");
        }
    }

    #[test]
    fn a_log_is_log_of_state_index() {
        let v = init_one(&spec(&[2, 3], Init::MambaALog), 0);
        let want = [0.0, 2f32.ln(), 3f32.ln(), 0.0, 2f32.ln(), 3f32.ln()];
        assert_eq!(v, want);
    }

    #[test]
    fn same_seed_same_weights() {
        let w = [
            spec(&[4, 4], Init::XavierUniform),
            spec(&[4], Init::Normal { std: 0.02 }),
        ];
        assert_eq!(initial_weights(&w, 9), initial_weights(&w, 9));
        assert_ne!(initial_weights(&w, 9), initial_weights(&w, 10));
    }
}
