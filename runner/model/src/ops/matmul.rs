//! Matrix products.

use super::{Rule, arity, broadcast, numel, show};
use crate::ir::{Dim, Shape};
use serde::Serialize;

/// `a[..., m, k] · b[..., k, n]` with batch broadcasting; a 2-D `b` (a weight `[in, out]`) applies to
/// the last axis of `a` of any rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatMul;

fn matmul_shape(a: &Shape, b: &Shape) -> Result<Shape, String> {
    if a.is_empty() || b.len() < 2 {
        return Err(format!("cannot multiply {} by {}", show(a), show(b)));
    }
    let k = a[a.len() - 1];
    if k != b[b.len() - 2] {
        return Err(format!(
            "inner dimensions differ: {} · {}",
            show(a),
            show(b)
        ));
    }
    if b.len() == 2 {
        let mut s = a.clone();
        *s.last_mut().unwrap() = b[1];
        return Ok(s);
    }
    if a.len() < 2 {
        return Err(format!("cannot multiply {} by {}", show(a), show(b)));
    }
    let batch = broadcast(&a[..a.len() - 2].to_vec(), &b[..b.len() - 2].to_vec())?;
    let mut s = batch;
    s.push(a[a.len() - 2]);
    s.push(b[b.len() - 1]);
    Ok(s)
}

impl Rule for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        Ok(vec![matmul_shape(inputs[0], inputs[1])?])
    }
    fn flops(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> f64 {
        let k = *inputs[0].last().unwrap_or(&0) as f64;
        2.0 * k * numel(&outputs[0])
    }
}

/// `x[..., in] · w[out, in]ᵀ` (the tied output head reads the embedding table this way).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatMulT;

impl Rule for MatMulT {
    fn name(&self) -> &'static str {
        "matmul_t"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        let (x, w) = (inputs[0], inputs[1]);
        if w.len() != 2 || x.last() != Some(&w[1]) {
            return Err(format!("cannot multiply {} by {}ᵀ", show(x), show(w)));
        }
        let mut s = x.clone();
        *s.last_mut().unwrap() = w[0];
        Ok(vec![s])
    }
    fn flops(&self, inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> f64 {
        2.0 * *inputs[0].last().unwrap_or(&0) as f64 * numel(&outputs[0])
    }
}

/// Outer product per row: `a[..., p] ⊗ b[..., q]` -> `[..., p, q]` (leading dims equal).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outer;

impl Rule for Outer {
    fn name(&self) -> &'static str {
        "outer"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        if a.is_empty() || a.len() != b.len() || a[..a.len() - 1] != b[..b.len() - 1] {
            return Err(format!(
                "needs two tensors with the same leading dimensions, got {} and {}",
                show(a),
                show(b)
            ));
        }
        let mut s = a.clone();
        s.push(*b.last().unwrap_or(&Dim::Fixed(1)));
        Ok(vec![s])
    }
    fn flops(&self, _inputs: &[Vec<usize>], outputs: &[Vec<usize>]) -> f64 {
        numel(&outputs[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::fixed;

    #[test]
    fn weights_apply_to_any_rank_and_batches_broadcast() {
        let x = vec![Dim::Batch, Dim::Seq, Dim::Fixed(8)];
        assert_eq!(
            matmul_shape(&x, &fixed(&[8, 3])).unwrap(),
            vec![Dim::Batch, Dim::Seq, Dim::Fixed(3)]
        );
        let q = vec![Dim::Batch, Dim::Fixed(4), Dim::Seq, Dim::Fixed(16)];
        let kt = vec![Dim::Batch, Dim::Fixed(4), Dim::Fixed(16), Dim::Seq];
        assert_eq!(
            matmul_shape(&q, &kt).unwrap(),
            vec![Dim::Batch, Dim::Fixed(4), Dim::Seq, Dim::Seq]
        );
        assert!(matmul_shape(&x, &fixed(&[7, 3])).is_err());
        // 2·k per output element
        assert_eq!(
            MatMul.flops(&[vec![1, 5, 8], vec![8, 3]], &[vec![1, 5, 3]]),
            240.0
        );
    }
}
