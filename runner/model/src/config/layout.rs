//! Model-level layout and input features: how blocks are wired (U-Net skips, parallel-residual
//! pairs, weight sharing by `recurrence` or `weight_group`) and what enters the stream before the
//! first block (positions, hashed n-grams, character features) and leaves it (logit soft-cap).

use super::{CharFeatures, Ngram};
use crate::blocks::Block;
use crate::error::ConfigError;
use crate::json::Fields;
use serde_json::Value;

/// `positional_embedding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positional {
    /// Rotary embeddings in attention blocks (default).
    Rope,
    None,
    /// A learned `[max_positions, D]` table added to the embeddings.
    Learned {
        max_positions: usize,
    },
}

/// What enters and leaves the stream outside the blocks.
pub(crate) struct Features {
    pub positional: Positional,
    pub bigram: Option<Ngram>,
    pub trigram: Option<Ngram>,
    pub char_features: Option<CharFeatures>,
    pub logit_softcap: Option<f32>,
}

fn ngram(f: &mut Fields<'_>, prefix: &str, d: usize) -> Result<Option<Ngram>, ConfigError> {
    let size_key = format!("{prefix}_vocab_size");
    let dim_key = format!("{prefix}_dim");
    let size = f.usize(&size_key)?.unwrap_or(0);
    let dim = f.usize(&dim_key)?.filter(|&v| v > 0).unwrap_or(d);
    match size {
        0 => Ok(None),
        1 => Err(f
            .error(&size_key, format!("{size_key}=1 is invalid"))
            .with_hint(format!(
                "use 0 to disable {prefix} embeddings or >= 2 to enable them"
            ))),
        _ => Ok(Some(Ngram { size, dim })),
    }
}

pub(crate) fn parse_features(
    f: &mut Fields<'_>,
    d: usize,
    seq_len: usize,
) -> Result<Features, ConfigError> {
    let positional = match f.choice(
        "positional_embedding",
        &["rope", "none", "learned_absolute"],
        "rope",
    )? {
        "rope" => Positional::Rope,
        "none" => Positional::None,
        _ => {
            let max_positions = f.usize("max_positions")?.unwrap_or(seq_len);
            if max_positions < seq_len {
                return Err(f.error(
                    "max_positions",
                    format!("max_positions={max_positions} must be >= seq_len={seq_len}"),
                ));
            }
            Positional::Learned { max_positions }
        }
    };
    if !matches!(positional, Positional::Learned { .. }) && f.has("max_positions") {
        return Err(f
            .error(
                "max_positions",
                "max_positions sizes the learned position table",
            )
            .with_hint("set \"positional_embedding\": \"learned_absolute\", or remove it"));
    }
    let char_vocab = f.usize("char_vocab_size")?.unwrap_or(0);
    let char_features = match char_vocab {
        0 => None,
        v if v < 257 => {
            return Err(f
                .error(
                    "char_vocab_size",
                    format!(
                        "char_vocab_size={v} must be >= 257 (id 0 is padding, bytes are 1..256)"
                    ),
                )
                .with_hint("use 257, or 0 to disable character features"));
        }
        v => Some(CharFeatures {
            vocab: v,
            dim: f.usize("char_dim")?.filter(|&c| c > 0).unwrap_or(d),
            max_per_token: f.positive("char_max_per_token", 16)?,
        }),
    };
    let logit_softcap = match f.f64("logit_softcap")? {
        None | Some(0.0) => None,
        Some(c) if c > 0.0 && c.is_finite() => Some(c as f32),
        Some(c) => {
            return Err(f.error(
                "logit_softcap",
                format!("logit_softcap={c} must be > 0 (or 0 to disable)"),
            ));
        }
    };
    Ok(Features {
        positional,
        bigram: ngram(f, "bigram", d)?,
        trigram: ngram(f, "trigram", d)?,
        char_features,
        logit_softcap,
    })
}

/// How the blocks are wired.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Per block: the block whose weights it uses (itself unless shared).
    pub roots: Vec<usize>,
    /// U-Net: the first `blocks / 2` are the encoder, the rest the decoder, joined by learned skips.
    pub unet: bool,
    /// Per block: whether it starts a parallel-residual pair with the next block.
    pub parallel: Vec<bool>,
}

impl Layout {
    pub(crate) fn parse(
        f: &mut Fields<'_>,
        blocks: &[Box<dyn Block>],
        groups: &[Option<String>],
        raw: &[Value],
    ) -> Result<Layout, ConfigError> {
        let n = blocks.len();
        let unet = f.bool("unet")?.unwrap_or(false);
        let roots = roots(f, blocks, groups, raw)?;
        let all_parallel = f.bool("parallel_residual")?.unwrap_or(false);
        if unet && (all_parallel || blocks.iter().any(|b| b.starts_parallel_pair())) {
            return Err(f
                .error(
                    "unet",
                    "unet cannot be combined with parallel_residual (as in mixlab)",
                )
                .with_hint("remove one of them"));
        }
        let mut parallel = vec![false; n];
        let mut i = 0;
        while i < n {
            let next_joins = i + 1 < n && blocks[i + 1].can_join_parallel_pair();
            let wants = blocks[i].starts_parallel_pair()
                || (all_parallel && blocks[i].can_lead_parallel_pair() && next_joins);
            if wants {
                if !next_joins || !blocks[i].can_lead_parallel_pair() {
                    return Err(ConfigError::new(
                        format!("blocks[{i}].parallel_residual"),
                        "a parallel-residual pair is an attention block followed by a feed-forward block (swiglu, geglu or mlp)",
                    ));
                }
                if blocks[i].kv_source().is_some() {
                    return Err(ConfigError::new(
                        format!("blocks[{i}].kv_source"),
                        "kv_source cannot be used on a block of a parallel-residual pair (as in mixlab)",
                    ));
                }
                parallel[i] = true;
                i += 2;
            } else {
                i += 1;
            }
        }
        check_kv_sources(blocks)?;
        Ok(Layout {
            roots,
            unet,
            parallel,
        })
    }
}

/// The weight root of each block from `recurrence` (an index per block, transitively) or
/// `weight_group` (the first block of a group owns the weights); roots have the same block type.
fn roots(
    f: &mut Fields<'_>,
    blocks: &[Box<dyn Block>],
    groups: &[Option<String>],
    raw: &[Value],
) -> Result<Vec<usize>, ConfigError> {
    let n = blocks.len();
    let mut roots: Vec<usize> = (0..n).collect();
    if let Some(list) = f.array("recurrence")? {
        if list.len() != n {
            return Err(f.error(
                "recurrence",
                format!(
                    "recurrence has {} entries but there are {n} blocks",
                    list.len()
                ),
            ));
        }
        if groups.iter().any(Option::is_some) {
            return Err(f
                .error(
                    "recurrence",
                    "recurrence and weight_group both share weights; use one of them",
                )
                .with_hint("remove weight_group from the blocks, or remove recurrence"));
        }
        for (i, v) in list.iter().enumerate() {
            let path = format!("recurrence[{i}]");
            let r = v.as_u64().ok_or_else(|| {
                ConfigError::new(&path, format!("expected a block index, found {v}"))
            })? as usize;
            if r > i {
                return Err(ConfigError::new(
                    &path,
                    format!("recurrence[{i}]={r} is a forward reference (must be <= {i})"),
                ));
            }
            roots[i] = roots[r];
        }
    }
    let mut first: std::collections::HashMap<&str, usize> = Default::default();
    for (i, g) in groups.iter().enumerate() {
        if let Some(g) = g {
            roots[i] = *first.entry(g.as_str()).or_insert(i);
        }
    }
    for (i, &r) in roots.iter().enumerate() {
        if blocks[r].kind() != blocks[i].kind() {
            return Err(ConfigError::new(
                format!("blocks[{i}]"),
                format!(
                    "shares the weights of blocks[{r}], a {} block, but is a {} block",
                    blocks[r].kind(),
                    blocks[i].kind()
                ),
            ));
        }
        // shared weights need the same block settings (mixlab: identical weight layout)
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("weight_group");
                o.remove("residual_scale_init");
            }
            v
        };
        if r != i && strip(&raw[r]) != strip(&raw[i]) {
            return Err(ConfigError::new(
                format!("blocks[{i}]"),
                format!(
                    "shares the weights of blocks[{r}] but its settings differ; blocks that share weights must be written alike"
                ),
            ));
        }
    }
    Ok(roots)
}

fn check_kv_sources(blocks: &[Box<dyn Block>]) -> Result<(), ConfigError> {
    for (i, b) in blocks.iter().enumerate() {
        let Some(src) = b.kv_source() else { continue };
        let path = format!("blocks[{i}].kv_source");
        if src >= i {
            return Err(ConfigError::new(
                path,
                format!(
                    "kv_source={} must name an earlier block (1-indexed)",
                    src + 1
                ),
            ));
        }
        match blocks[src].attention_heads() {
            Some(h) if Some(h) == b.attention_heads() && blocks[src].kv_source().is_none() => {}
            Some(_) if blocks[src].kv_source().is_some() => {
                return Err(ConfigError::new(
                    path,
                    format!("blocks[{src}] reuses keys itself; name the block that computes them"),
                ));
            }
            Some(h) => {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "blocks[{src}] has heads/kv_heads {h:?}, this block {:?}; they must match",
                        b.attention_heads().unwrap_or_default()
                    ),
                ));
            }
            None => {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "blocks[{src}] is a {} block that shares no keys; kv_source needs a plain block without differential_attention",
                        blocks[src].kind()
                    ),
                ));
            }
        }
    }
    Ok(())
}
