//! Products beyond the plain matmul.

use mixsweep_mlx::{Array, Result};

/// `a[..., p] ⊗ b[..., q]` -> `[..., p, q]`.
pub fn outer(a: &Array, b: &Array) -> Result<Array> {
    a.expand_dims(-1)?.mul(&b.expand_dims(-2)?)
}
