//! Token-indexed tables: token embeddings, learned absolute positions, hashed n-gram ids.

use super::{Rule, arity, last_fixed};
use crate::ir::{Dim, Shape, show};
use serde::Serialize;

/// `table [V, D]` rows at integer `ids [...]` -> `[..., D]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding;

impl Rule for Embedding {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        if inputs[0].len() != 2 {
            return Err(format!("the table must be 2-D, got {}", show(inputs[0])));
        }
        let mut s = inputs[1].clone();
        s.push(Dim::Fixed(last_fixed(inputs[0])?));
        Ok(vec![s])
    }
}

/// Learned absolute positions: `table [P, D]` and any `[B, T, ...]` value (for `T`) -> `[1, T, D]`,
/// rows `offset..offset + T` (the offset is the decode position when generating, else 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionEmbedding;

impl Rule for PositionEmbedding {
    fn name(&self) -> &'static str {
        "position_embedding"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        if inputs[0].len() != 2 || inputs[1].get(1) != Some(&Dim::Seq) {
            return Err(format!(
                "needs table [P, D] and a [B, T, ...] value, got {} and {}",
                show(inputs[0]),
                show(inputs[1])
            ));
        }
        Ok(vec![vec![Dim::Fixed(1), Dim::Seq, inputs[0][1]]])
    }
}

/// Hashed n-gram ids of `tokens [B, T]` (mixlab's bigram and trigram embeddings), within each row
/// (mixlab hashes bigrams across row boundaries; we do not: position 0 of every row gets the sentinel).
/// * n = 2: `(36313·t_i XOR 27191·t_{i-1}) mod (size - 1)`; sentinel `size - 1`.
/// * n = 3: `((t_{i-2}·size + t_{i-1})·size + t_i) mod (size - 1) + 1`; sentinel 0 at positions 0, 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NgramHash {
    pub n: usize,
    pub size: usize,
}

impl Rule for NgramHash {
    fn name(&self) -> &'static str {
        "ngram_hash"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 1, 1)?;
        if !(2..=3).contains(&self.n) || self.size < 2 {
            return Err(format!(
                "n={} size={} (n is 2 or 3, size >= 2)",
                self.n, self.size
            ));
        }
        Ok(vec![inputs[0].clone()])
    }
    /// The previous `n − 1` token ids.
    fn decode_state(&self, _inputs: &[Vec<usize>], _context: usize) -> usize {
        self.n - 1
    }
}

/// A bag of embeddings: `table [C, D]` rows at `ids [..., K]`, summed over `K`, id 0 contributing
/// nothing (padding) -> `[..., D]` (mixlab's character-feature bag).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingBag;

impl Rule for EmbeddingBag {
    fn name(&self) -> &'static str {
        "embedding_bag"
    }
    fn shapes(&self, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
        arity(inputs, 2, 2)?;
        if inputs[0].len() != 2 || inputs[1].is_empty() {
            return Err(format!(
                "needs table [C, D] and ids [..., K], got {} and {}",
                show(inputs[0]),
                show(inputs[1])
            ));
        }
        let mut s = inputs[1].clone();
        *s.last_mut().unwrap() = inputs[0][1];
        Ok(vec![s])
    }
}
