//! Reductions.

use mixsweep_mlx::{Array, Result};
use mixsweep_model::ops::Softmax;

/// Softmax accumulated in float32 (MLX's precise mode), in the input's dtype.
pub fn softmax(s: &Softmax, x: &Array) -> Result<Array> {
    x.softmax(s.axis as i32, true)
}
