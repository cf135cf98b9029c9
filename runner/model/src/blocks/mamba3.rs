//! `mamba3`: mixlab's deprecated name of [`super::gated_linear_ssm`], accepted so that older configs
//! load (the same block, weights and math). It is not Mamba-3: that is `mamba3-canonical`.

use super::{Block, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::json::Fields;

pub const TYPE: BlockType = BlockType {
    name: "mamba3",
    parse,
    fields: &["inner_dim"],
    summary: "deprecated mixlab name of `gated_linear_ssm` (same block)",
};

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    (super::gated_linear_ssm::TYPE.parse)(f, dims)
}
