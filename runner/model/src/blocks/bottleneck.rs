//! `bottleneck`: mixlab's name for a [`super::perceiver`] block with 4 latents by default (the same
//! weights, math and causal fix).

use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::json::Fields;

pub const TYPE: BlockType = BlockType {
    name: "bottleneck",
    parse,
    fields: &["heads", "num_latents"],
    summary: "a perceiver with 4 latents by default (causal)",
};

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    super::perceiver::parse_with(f, dims, "bottleneck", 4)
}
