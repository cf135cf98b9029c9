//! Text generation from trained weights: the prompt is encoded with the dataset's tokenizer (or bytes
//! for vocab 256, or given as `token_ids:1,2,3`), run once through the model (the prefill), and then
//! each new token costs one single-position step: attention blocks keep their keys and values, Mamba
//! blocks their convolution inputs and scan state ([`crate::executor::DecodeCache`]), so the cost per
//! token does not grow with the prompt. `no_cache` recomputes the whole context every token (the
//! reference the cache is tested against). Generation runs past `seq_len`: the model sees at most
//! `seq_len` tokens, and when the context fills it restarts from its last `seq_len / 2` tokens (one
//! prefill per `seq_len / 2` new tokens); a longer prompt keeps its last `seq_len` tokens. Sampling (temperature, top-k, top-p) runs on the host with a
//! seeded SplitMix64, so a seed gives the same text every time.

use crate::checkpoint;
use crate::executor::{DecodeCache, Executor};
use crate::rng::SplitMix64;
use crate::train::TrainError;
use mixsweep_mlx::{Array, Dtype, device};
use mixsweep_model::{ConfigError, ModelConfig};
use std::path::{Path, PathBuf};

/// How text and token ids convert.
pub enum Codec {
    Bytes,
    Bpe(Box<tokenizers::Tokenizer>),
}

impl Codec {
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            Codec::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Codec::Bpe(t) => t
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| format!("encoding the prompt: {e}")),
        }
    }

    /// Decodes ids; a trailing incomplete UTF-8 sequence is left out (it is completed by later tokens).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Codec::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
                match std::str::from_utf8(&bytes) {
                    Ok(s) => s.to_string(),
                    Err(e) if e.error_len().is_none() => {
                        String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()
                    }
                    Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
                }
            }
            Codec::Bpe(t) => t
                .decode(ids, false)
                .unwrap_or_default()
                .trim_end_matches('\u{FFFD}')
                .to_string(),
        }
    }
}

/// Sampling settings.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    pub top_p: f32,
}

/// Picks the next token from one position's logits.
pub fn sample(logits: &[f32], s: Sampling, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if s.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if s.top_k > 0 {
        order.truncate(s.top_k);
    }
    let top = logits[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (((logits[i] - top) / s.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                acc += p;
                acc >= s.top_p as f64
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let u = rng.next_f64();
    let mut acc = 0.0;
    for (p, &i) in probs.iter().zip(&order) {
        acc += p;
        if u < acc {
            return i as u32;
        }
    }
    *order.last().unwrap() as u32
}

pub struct GenerateOptions {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub prompt: String,
    pub tokenizer: Option<PathBuf>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    pub no_cache: bool,
    pub device: Option<device::Device>,
}

fn last_logits(logits: &Array) -> Result<Vec<f32>, mixsweep_mlx::Error> {
    let t = logits.dim(1);
    logits
        .slice_axis(1, t - 1, t)?
        .astype(Dtype::F32)?
        .to_vec_f32()
}

/// Generates up to `max_tokens` tokens, calling `on_text` with each newly decoded piece of text.
/// Returns the generated ids (without the prompt).
pub fn generate(
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Vec<u32>, TrainError> {
    let cfg = ModelConfig::load(&opts.config)?;
    let codec = match &opts.tokenizer {
        Some(p) => {
            // a dataset folder stands for the tokenizer.json that prepare wrote into it
            let file = if p.is_dir() {
                p.join("tokenizer.json")
            } else {
                p.clone()
            };
            Codec::Bpe(Box::new(tokenizers::Tokenizer::from_file(&file).map_err(
                |e| ConfigError::new("", format!("--tokenizer {}: {e}", file.display())),
            )?))
        }
        None if cfg.vocab_size == 256 => Codec::Bytes,
        None => {
            return Err(ConfigError::new(
                "vocab_size",
                format!(
                    "vocab_size {} is not bytes: pass --tokenizer with the dataset's tokenizer.json",
                    cfg.vocab_size
                ),
            )
            .into());
        }
    };
    let prompt: Vec<u32> = match opts.prompt.strip_prefix("token_ids:") {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ConfigError::new("", format!("--prompt token_ids: {e} (use token_ids:1,2,3)"))
            })?,
        None => codec
            .encode(&opts.prompt)
            .map_err(|e| ConfigError::new("", e))?,
    };
    if prompt.is_empty() {
        return Err(ConfigError::new("", "--prompt is empty: give at least one token").into());
    }
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(ConfigError::new(
            "vocab_size",
            format!("prompt token {bad} is >= vocab_size {}", cfg.vocab_size),
        )
        .into());
    }
    device::select(opts.device)?;
    let program = cfg.lower();
    let host = checkpoint::load(&opts.weights, &program.weights)?;
    let weights = crate::init::upload(&program.weights, &host)?;
    let char_map = match (&cfg.char_features, &opts.tokenizer) {
        (None, _) => None,
        (Some(c), Some(t)) => {
            let dir = if t.is_dir() {
                t.clone()
            } else {
                t.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            Some(
                crate::char_features::load(&dir.join("x"), cfg.vocab_size, c)
                    .map_err(|e| ConfigError::new("char_vocab_size", e))?,
            )
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "char_vocab_size",
                "this model reads character features: pass --tokenizer with the dataset's folder",
            )
            .into());
        }
    };
    let exec = Executor::new(&program, cfg.training.compute_dtype).with_char_map(char_map);
    // models whose ops cannot keep a decode state (custom attention) recompute the whole context
    let no_cache = opts.no_cache || !crate::lower::supports_decode_cache(&program);
    let mut rng = SplitMix64::new(opts.seed);
    let as_array = |ids: &[u32]| {
        let v: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        Array::from_i32(&v, &[1, v.len()])
    };
    // The model sees at most seq_len tokens (the positions it was trained on). The context starts at
    // `start`; when it would grow past seq_len it restarts at the last half of it, so the cached path
    // re-runs a prefill once every seq_len/2 tokens, and both paths see the same tokens.
    let window = cfg.seq_len.max(1);
    let keep = window.div_ceil(2);
    let mut cache = DecodeCache::new();
    let mut sequence = prompt.clone();
    let mut start = sequence.len().saturating_sub(window);
    let mut generated: Vec<u32> = vec![];
    let mut shown = String::new();
    let mut logits = if no_cache {
        last_logits(
            &exec
                .forward(&weights, &as_array(&sequence[start..])?, None, None)?
                .logits,
        )?
    } else {
        last_logits(&exec.forward_cached(&weights, &as_array(&sequence[start..])?, &mut cache)?)?
    };
    for _ in 0..opts.max_tokens {
        let next = sample(&logits, opts.sampling, &mut rng);
        generated.push(next);
        sequence.push(next);
        let text = codec.decode(&generated);
        if text.len() > shown.len() && text.starts_with(&shown) {
            on_text(&text[shown.len()..]);
            shown = text;
        }
        if generated.len() == opts.max_tokens {
            break;
        }
        let refresh = sequence.len() - start > window;
        if refresh {
            start = sequence.len() - keep;
        }
        logits = if no_cache {
            last_logits(
                &exec
                    .forward(&weights, &as_array(&sequence[start..])?, None, None)?
                    .logits,
            )?
        } else if refresh {
            cache = DecodeCache::new();
            last_logits(&exec.forward_cached(
                &weights,
                &as_array(&sequence[start..])?,
                &mut cache,
            )?)?
        } else {
            last_logits(&exec.forward_cached(&weights, &as_array(&[next])?, &mut cache)?)?
        };
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rules() {
        let logits = [0.0f32, 3.0, 1.0, 2.0];
        let mut rng = SplitMix64::new(1);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        };
        assert_eq!(sample(&logits, greedy, &mut rng), 1);
        // top_k 1 is greedy whatever the temperature
        let k1 = Sampling {
            temperature: 5.0,
            top_k: 1,
            top_p: 1.0,
        };
        assert!((0..50).all(|_| sample(&logits, k1, &mut rng) == 1));
        // top_k 2 only ever picks the two best
        let k2 = Sampling {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
        };
        let picks: Vec<u32> = (0..200).map(|_| sample(&logits, k2, &mut rng)).collect();
        assert!(picks.iter().all(|&p| p == 1 || p == 3));
        assert!(picks.contains(&3));
        // a small top_p keeps only the most likely token
        let p = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.1,
        };
        assert!((0..50).all(|_| sample(&logits, p, &mut rng) == 1));
        // same seed, same draws
        let t = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        };
        let a: Vec<u32> = {
            let mut r = SplitMix64::new(7);
            (0..20).map(|_| sample(&logits, t, &mut r)).collect()
        };
        let b: Vec<u32> = {
            let mut r = SplitMix64::new(7);
            (0..20).map(|_| sample(&logits, t, &mut r)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn byte_decoding_holds_back_incomplete_characters() {
        let c = Codec::Bytes;
        let e: Vec<u32> = "é".bytes().map(u32::from).collect();
        assert_eq!(c.decode(&e[..1]), "");
        assert_eq!(c.decode(&e), "é");
    }

    /// The cache gives the logits of recomputing the whole sequence, for attention (RoPE offsets,
    /// KV cache, GQA, differential attention) and for Mamba (convolution history, scan state).
    #[test]
    fn cached_decoding_matches_full_forward() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let small = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"model_dim": 32, "vocab_size": 64, "seq_len": 32});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            (format!("{extra}"), ModelConfig::from_value(&v).unwrap())
        };
        let load = |example: &str| {
            (
                example.to_string(),
                ModelConfig::load(&root.join(example)).unwrap(),
            )
        };
        let cases = [
            load("examples/tiny.json"),
            load("examples/tiny_mamba.json"),
            small(serde_json::json!({"blocks": [
                {"type": "plain", "heads": 4, "kv_heads": 2, "window_size": 5, "qk_norm": true, "xsa": true},
                {"type": "plain", "heads": 4, "kv_heads": 2, "kv_source": 1},
                {"type": "plain", "heads": 2, "differential_attention": true, "window_size": 6}]})),
            small(
                serde_json::json!({"bigram_vocab_size": 97, "trigram_vocab_size": 53,
                "positional_embedding": "learned_absolute", "unet": true, "resid_mix": true,
                "blocks": [{"type": "token_blend"}, {"type": "gated_linear_ssm"}, {"type": "plain", "heads": 2},
                           {"type": "swiglu"}]}),
            ),
            small(serde_json::json!({"blocks": [
                {"type": "retnet", "heads": 2, "decay": 0.95}, {"type": "rwkv"},
                {"type": "legacy_mamba"}, {"type": "mamba3"},
                {"type": "moe", "num_experts": 3, "top_k": 2}, {"type": "hgrn2", "heads": 2, "d_state": 8},
                {"type": "mlstm", "heads": 2, "d_k": 8, "d_v": 4},
                {"type": "mamba3-canonical", "state_size": 4, "n_groups": 2},
                {"type": "s4d", "state_size": 6, "n_ssm": 4, "output_transform": "glu"},
                {"type": "gated_deltanet", "heads": 2, "d_k": 4},
                {"type": "cross_attention", "heads": 2, "source_stream": "block:2"},
                {"type": "cross_attention", "heads": 4, "source_stream": "embedding"}]})),
            small(
                serde_json::json!({"parallel_residual": true, "recurrence": [0, 1, 0, 1], "blocks": [
                {"type": "plain", "heads": 2}, {"type": "geglu"}, {"type": "plain", "heads": 2}, {"type": "geglu"}]}),
            ),
        ];
        for (example, cfg) in cases {
            let program = cfg.lower();
            let host = crate::init::initial_weights(&program.weights, 3);
            let w = crate::init::upload(&program.weights, &host).unwrap();
            let exec = Executor::new(&program, mixsweep_model::ComputeDtype::Float32);
            let ids: Vec<i32> = (0..20)
                .map(|i| (i * 37 + 5) % cfg.vocab_size as i32)
                .collect();
            let full = exec
                .forward(&w, &Array::from_i32(&ids, &[1, 20]).unwrap(), None, None)
                .unwrap()
                .logits
                .astype(Dtype::F32)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            let v = cfg.vocab_size;
            let mut cache = DecodeCache::new();
            // prefill 7 tokens, then one at a time
            let pre = exec
                .forward_cached(
                    &w,
                    &Array::from_i32(&ids[..7], &[1, 7]).unwrap(),
                    &mut cache,
                )
                .unwrap();
            let mut got = pre.astype(Dtype::F32).unwrap().to_vec_f32().unwrap();
            for &t in &ids[7..] {
                let l = exec
                    .forward_cached(&w, &Array::from_i32(&[t], &[1, 1]).unwrap(), &mut cache)
                    .unwrap();
                got.extend(l.astype(Dtype::F32).unwrap().to_vec_f32().unwrap());
            }
            assert_eq!(cache.position, 20);
            assert_eq!(got.len(), 20 * v);
            // what the cache holds is what `count` reports as the inference state
            let held: usize = cache
                .states
                .values()
                .map(|s| match s {
                    crate::lower::State::Kv(k, v) => k.size() + v.size(),
                    crate::lower::State::Tail(a) | crate::lower::State::Hidden(a) => a.size(),
                })
                .sum();
            let predicted = mixsweep_model::inference_state_values(&program, 20);
            assert_eq!(held, predicted, "{example}: cached state size");
            let max_diff = full
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                max_diff < 1e-3,
                "{example}: cached logits differ by {max_diff}"
            );
        }
    }
}
