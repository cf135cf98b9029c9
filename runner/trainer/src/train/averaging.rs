//! SWA/EMA of the weights on the device (mixlab §8): at steps `s >= swa_start` with
//! `(s - swa_start) % swa_interval == 0` (after that step's update), the first time a copy of the
//! weights, then `ema = decay · ema + (1 - decay) · w`.

use super::resume::{Meta, ResumePoint};
use mixsweep_mlx::{Array, Result};
use mixsweep_model::config::averaging::Averaging;

pub struct Averager {
    cfg: Averaging,
    ema: Option<Vec<Array>>,
    updates: usize,
}

impl Averager {
    pub fn new(cfg: Averaging) -> Averager {
        Averager {
            cfg,
            ema: None,
            updates: 0,
        }
    }

    /// Continues from a resume point's averaged weights.
    pub fn resume(
        cfg: Averaging,
        point: &ResumePoint,
        weights: &[mixsweep_model::ir::WeightSpec],
    ) -> Result<Averager> {
        let mut a = Averager::new(cfg);
        if let Some(host) = &point.averaged {
            a.ema = Some(crate::init::upload(weights, host)?);
            a.updates = point.number("swa_updates").map_or(0, |n| n as usize);
        }
        Ok(a)
    }

    /// Takes in the weights after step `s` when the schedule says so (lazily: no device sync).
    pub fn observe(&mut self, s: usize, params: &[Array]) -> Result<()> {
        if !self.cfg.updates_at(s) {
            return Ok(());
        }
        let d = self.cfg.decay as f32;
        self.ema = Some(match self.ema.take() {
            None => params.to_vec(),
            Some(ema) => ema
                .iter()
                .zip(params)
                .map(|(e, w)| e.mul_scalar(d)?.add(&w.mul_scalar(1.0 - d)?))
                .collect::<Result<_>>()?,
        });
        self.updates += 1;
        Ok(())
    }

    /// The averaged weights, once averaging has started.
    pub fn weights(&self) -> Option<&[Array]> {
        self.ema.as_deref()
    }

    pub fn updates(&self) -> usize {
        self.updates
    }

    pub fn save(&self, meta: &mut Meta) {
        if self.ema.is_some() {
            meta.insert("swa_updates".into(), self.updates.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three updates by hand: start 1, interval 2, decay 0.5, weights 1, 2, 3, 4, 5 after steps 0..5.
    #[test]
    fn the_average_follows_its_schedule() {
        let mut a = Averager::new(Averaging {
            start: 1,
            decay: 0.5,
            interval: 2,
        });
        for s in 0..5 {
            let w = Array::from_f32(&[(s + 1) as f32, -((s + 1) as f32)], &[2]).unwrap();
            a.observe(s, &[w]).unwrap();
        }
        // step 1 copies 2; step 3: 0.5·2 + 0.5·4 = 3; step 4 is not on the interval
        assert_eq!(a.updates(), 2);
        assert_eq!(
            a.weights().unwrap()[0].to_vec_f32().unwrap(),
            vec![3.0, -3.0]
        );
        let mut b = Averager::new(Averaging {
            start: 1,
            decay: 0.5,
            interval: 1,
        });
        for s in 0..4 {
            b.observe(s, &[Array::from_f32(&[(s + 1) as f32], &[1]).unwrap()])
                .unwrap();
        }
        // copies 2, then 0.5·2 + 0.5·3 = 2.5, then 0.5·2.5 + 0.5·4 = 3.25
        assert_eq!(b.weights().unwrap()[0].to_vec_f32().unwrap(), vec![3.25]);
    }
}
