//! Post-training quantization of weights to int8 or int6 with one scale per row (mixlab §8), the
//! quantized safetensors format, and dequantization (to evaluate or load quantized weights).
//!
//! Per row of a rank-2 tensor: `clip` is the 0.9999-quantile of `|w|` (`quantile`) or
//! `max(k · std(row), 1/127)` (`sdclip`, population std, `k` 12.85, or 20 for embeddings);
//! `scale = max(clip / 127, 1/127)`; `q = round(clamp(w, ±clip) / scale)` in `[-127, 127]`; int6
//! keeps multiples of 4: `round(q / 4) · 4` in `[-128, 124]`. Tensors of rank 1 or under 256
//! elements stay float32. Stored as an `I8` tensor `name` and an `F32` tensor `name.scale [rows]`.

use std::fmt;

/// Bits per weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bits {
    Int8,
    Int6,
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bits::Int8 => "int8",
            Bits::Int6 => "int6",
        })
    }
}

/// How each row's clipping value is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Quantile,
    Sdclip,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Quantile => "quantile",
            Method::Sdclip => "sdclip",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheme {
    pub bits: Bits,
    pub method: Method,
    /// `sdclip`'s multiple of the row's standard deviation (embeddings use `k_embed`).
    pub k: f32,
    pub k_embed: f32,
}

impl Scheme {
    pub fn new(bits: Bits, method: Method) -> Scheme {
        Scheme {
            bits,
            method,
            k: 12.85,
            k_embed: 20.0,
        }
    }

    /// Whether a tensor of this shape is quantized (rank 2 and at least 256 elements).
    pub fn applies(shape: &[usize]) -> bool {
        shape.len() == 2 && shape.iter().product::<usize>() >= 256
    }
}

/// One quantized row-major `[rows, cols]` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
}

fn clip_of(row: &[f32], scheme: &Scheme, embed: bool) -> f32 {
    match scheme.method {
        Method::Quantile => {
            let mut a: Vec<f32> = row.iter().map(|x| x.abs()).collect();
            let idx = ((0.9999 * a.len() as f64).ceil() as usize).clamp(1, a.len()) - 1;
            let (_, v, _) = a.select_nth_unstable_by(idx, f32::total_cmp);
            *v
        }
        Method::Sdclip => {
            let n = row.len() as f64;
            let mean = row.iter().map(|x| *x as f64).sum::<f64>() / n;
            let var = row.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
            let k = if embed { scheme.k_embed } else { scheme.k };
            (k as f64 * var.sqrt()).max(1.0 / 127.0) as f32
        }
    }
}

/// Quantizes `w` (`[rows, cols]`, row-major); `embed` picks sdclip's embedding multiple.
pub fn quantize(w: &[f32], cols: usize, scheme: &Scheme, embed: bool) -> Quantized {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / cols.max(1));
    for row in w.chunks(cols) {
        let clip = clip_of(row, scheme, embed);
        let scale = (clip / 127.0).max(1.0 / 127.0);
        scales.push(scale);
        for &x in row {
            let v = (x.clamp(-clip, clip) / scale).round().clamp(-127.0, 127.0);
            let v = match scheme.bits {
                Bits::Int8 => v,
                Bits::Int6 => ((v / 4.0).round() * 4.0).clamp(-128.0, 124.0),
            };
            q.push(v as i8);
        }
    }
    Quantized { q, scales }
}

/// The float values a quantized tensor stands for.
pub fn dequantize(t: &Quantized, cols: usize) -> Vec<f32> {
    t.q.chunks(cols)
        .zip(&t.scales)
        .flat_map(|(row, s)| row.iter().map(move |v| *v as f32 * s))
        .collect()
}

/// Quantizes and dequantizes every tensor the scheme applies to (what the model computes with
/// after a quantized export), leaving the others as they are.
pub fn round_trip(
    specs: &[mixsweep_model::ir::WeightSpec],
    values: &[Vec<f32>],
    scheme: &Scheme,
) -> Vec<Vec<f32>> {
    specs
        .iter()
        .zip(values)
        .map(|(s, v)| match Scheme::applies(&s.shape) {
            true => dequantize(
                &quantize(v, s.shape[1], scheme, s.name.contains("embed")),
                s.shape[1],
            ),
            false => v.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, cols: usize) -> Vec<f32> {
        (0..n * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i / cols) as f32))
            .collect()
    }

    #[test]
    fn int8_round_trip_error_is_at_most_half_a_step_per_row() {
        let (n, cols) = (8, 64);
        let w = rows(n, cols);
        for method in [Method::Quantile, Method::Sdclip] {
            let s = Scheme::new(Bits::Int8, method);
            let q = quantize(&w, cols, &s, false);
            assert_eq!(q.scales.len(), n);
            let back = dequantize(&q, cols);
            for (r, (a, b)) in w.chunks(cols).zip(back.chunks(cols)).enumerate() {
                let scale = q.scales[r];
                let clip = 127.0 * scale;
                for (x, y) in a.iter().zip(b) {
                    let target = x.clamp(-clip, clip);
                    assert!(
                        (target - y).abs() <= scale / 2.0 + 1e-6,
                        "{method}: row {r}: {x} -> {y} (scale {scale})"
                    );
                }
            }
        }
    }

    #[test]
    fn quantile_clips_only_the_extreme_and_int6_keeps_multiples_of_four() {
        let mut w = vec![0.01f32; 20000];
        w[3] = 50.0; // one outlier in 20000: above the 0.9999 quantile
        let q = quantize(&w, 20000, &Scheme::new(Bits::Int8, Method::Quantile), false);
        assert!(
            (q.scales[0] - 1.0 / 127.0).abs() < 1e-9,
            "the outlier does not set the scale: {}",
            q.scales[0]
        );
        let w = rows(4, 64);
        let q6 = quantize(&w, 64, &Scheme::new(Bits::Int6, Method::Quantile), false);
        assert!(
            q6.q.iter()
                .all(|v| v % 4 == 0 && (-128..=124).contains(&(*v as i32)))
        );
    }
}
