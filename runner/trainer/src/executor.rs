//! Runs an IR [`Program`] on MLX: each op maps to a few MLX calls. Called inside `value_and_grad`
//! and `compile`, so this interpreter runs only while MLX traces; the compiled graph replays without
//! it.
//!
//! Precision: with `bfloat16` compute, weights are cast to bf16 on entry (master copies stay
//! float32 outside), activations and matmuls run in bf16, and RMSNorm, the Mamba scan and the loss
//! run in float32.

use mixsweep_mlx::{Array, Dtype, Result, random, where_};
use mixsweep_model::ComputeDtype;
use mixsweep_model::ir::{Activation, Op, Program, Source};

/// Per-step log-decay floor of the chunked scan is `-SCAN_LOG_BUDGET / chunk`, so that `exp(-cumsum)`
/// inside one chunk stays below e^64 in float32. With the default chunk of 8 the floor is -8: a
/// channel keeps at least e^-8 ≈ 3.4e-4 of its state per step (the exact scan may keep less).
pub const SCAN_LOG_BUDGET: f32 = 64.0;

/// Vocabularies up to this size embed tokens with a one-hot matmul instead of a gather.
/// `MIXSWEEP_EMBEDDING=gather|matmul` overrides the choice (for benchmarks).
pub const EMBEDDING_MATMUL_MAX_VOCAB: usize = 1024;

fn embedding_as_matmul(vocab: usize) -> bool {
    match std::env::var("MIXSWEEP_EMBEDDING").as_deref() {
        Ok("gather") => false,
        Ok("matmul") => true,
        _ => vocab <= EMBEDDING_MATMUL_MAX_VOCAB,
    }
}

/// What incremental decoding keeps between calls of [`Executor::forward_cached`], per op.
#[derive(Default)]
pub struct DecodeCache {
    /// Tokens processed so far (the next token's position).
    pub position: usize,
    kv: std::collections::HashMap<usize, (Array, Array)>,
    conv: std::collections::HashMap<usize, Array>,
    scan: std::collections::HashMap<usize, Array>,
}

impl DecodeCache {
    pub fn new() -> DecodeCache {
        DecodeCache::default()
    }
}

pub struct Executor<'p> {
    pub program: &'p Program,
    pub dtype: ComputeDtype,
}

/// Results of a forward pass.
pub struct ForwardOutput {
    /// Mean cross-entropy (float32 scalar); `None` when no targets were given.
    pub loss: Option<Array>,
    /// `[B, T, V]` logits in the compute dtype.
    pub logits: Array,
}

impl<'p> Executor<'p> {
    pub fn new(program: &'p Program, dtype: ComputeDtype) -> Self {
        Executor { program, dtype }
    }

    fn compute_dtype(&self) -> Dtype {
        match self.dtype {
            ComputeDtype::Float32 => Dtype::F32,
            ComputeDtype::Bfloat16 => Dtype::Bf16,
        }
    }

    /// Forward pass. `dropout_key` (a PRNG key) turns on training mode; `None` is evaluation.
    pub fn forward(
        &self,
        weights: &[Array],
        tokens: &Array,
        targets: Option<&Array>,
        dropout_key: Option<&Array>,
    ) -> Result<ForwardOutput> {
        self.run(weights, tokens, targets, dropout_key, None)
    }

    /// Incremental forward for generation: `tokens [B, L]` continue the sequence held by `cache`
    /// (attention keys/values, the convolution's last inputs, the scan state), which is updated. The
    /// first call (empty cache) may pass the whole prompt; later calls one token (`L = 1`). Returns
    /// the logits `[B, L, V]`. Evaluation mode (no dropout).
    pub fn forward_cached(
        &self,
        weights: &[Array],
        tokens: &Array,
        cache: &mut DecodeCache,
    ) -> Result<Array> {
        let len = tokens.dim(1);
        if cache.position > 0 && len != 1 {
            return Err(mixsweep_mlx::Error::new(
                "forward_cached: after the prompt, feed one token at a time".to_string(),
            ));
        }
        let out = self.run(weights, tokens, None, None, Some(cache))?;
        cache.position += len;
        Ok(out.logits)
    }

    fn run(
        &self,
        weights: &[Array],
        tokens: &Array,
        targets: Option<&Array>,
        dropout_key: Option<&Array>,
        mut cache: Option<&mut DecodeCache>,
    ) -> Result<ForwardOutput> {
        let p = self.program;
        let dt = self.compute_dtype();
        let mut env: Vec<Option<Array>> = vec![None; p.values.len()];
        for (i, info) in p.values.iter().enumerate() {
            match info.source {
                Source::Weight(w) => {
                    let a = &weights[w];
                    env[i] = Some(if dt == Dtype::F32 {
                        a.clone()
                    } else {
                        a.astype(dt)?
                    });
                }
                Source::Tokens => env[i] = Some(tokens.clone()),
                Source::Targets => {
                    if let Some(t) = targets {
                        env[i] = Some(t.clone())
                    }
                }
                Source::Op(_) => {}
            }
        }
        let dropout_keys = match (dropout_key, p.dropout_ops) {
            (Some(k), n) if n > 0 => Some(random::split(k, n)?),
            _ => None,
        };
        let get = |env: &Vec<Option<Array>>, v: mixsweep_model::ir::ValueId| -> Result<Array> {
            env[v.0].clone().ok_or_else(|| {
                mixsweep_mlx::Error::new(format!(
                    "IR value {} used before it was computed",
                    p.values[v.0].name
                ))
            })
        };
        for (op_index, op) in p.ops.iter().enumerate() {
            if let Op::ProjectSplit { x, weights, outs } = op {
                let ws = weights
                    .iter()
                    .map(|w| get(&env, *w))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Array> = ws.iter().collect();
                let mut indices = Vec::with_capacity(ws.len() - 1);
                let mut end = 0;
                for w in &ws[..ws.len() - 1] {
                    end += w.dim(1) as i32;
                    indices.push(end);
                }
                let fused = get(&env, *x)?.matmul(&mixsweep_mlx::concatenate(&refs, 1)?)?;
                let parts = mixsweep_mlx::split(&fused, &indices, -1)?;
                for (o, part) in outs.iter().zip(parts) {
                    env[o.0] = Some(part);
                }
                continue;
            }
            let (out, value) = match op {
                Op::Embedding { table, tokens, out } => {
                    let ids = get(&env, *tokens)?;
                    let vocab = match p.values[table.0].shape.first() {
                        Some(mixsweep_model::ir::Dim::Fixed(v)) => *v,
                        _ => usize::MAX,
                    };
                    if embedding_as_matmul(vocab) {
                        // One-hot matmul: for a small vocabulary this is a few MFLOP per row, and
                        // its backward pass is a dense matmul instead of a scatter-add whose atomics
                        // serialise on the few ids that dominate real text (spaces, 'e', ...).
                        let classes = Array::arange(0.0, vocab as f64, 1.0, Dtype::I32)?;
                        let one_hot = ids.expand_dims(-1)?.equal(&classes)?.astype(dt)?;
                        (out, one_hot.matmul(&get(&env, *table)?)?)
                    } else {
                        // Gather from the float32 master table and cast the rows: the backward pass is
                        // then a float32 scatter-add (bf16 atomics are emulated and slower still).
                        let master = match p.values[table.0].source {
                            Source::Weight(w) => weights[w].clone(),
                            _ => get(&env, *table)?,
                        };
                        let rows = master.take(&ids, 0)?;
                        (
                            out,
                            if rows.dtype()? == dt {
                                rows
                            } else {
                                rows.astype(dt)?
                            },
                        )
                    }
                }
                Op::Linear { x, weight, out } => {
                    (out, get(&env, *x)?.matmul(&get(&env, *weight)?)?)
                }
                Op::ProjectSplit { .. } => unreachable!("multi-output op handled above"),
                Op::LinearTransposed { x, weight, out } => {
                    (out, get(&env, *x)?.matmul(&get(&env, *weight)?.t()?)?)
                }
                Op::RmsNorm { x, scale, eps, out } => (
                    out,
                    get(&env, *x)?.rms_norm(Some(&get(&env, *scale)?), *eps)?,
                ),
                Op::Add { a, b, out } => (out, get(&env, *a)?.add(&get(&env, *b)?)?),
                Op::Mul { a, b, out } => (out, get(&env, *a)?.mul(&get(&env, *b)?)?),
                Op::Activation { x, kind, out } => (out, activation(&get(&env, *x)?, *kind)?),
                Op::SliceLast { x, start, end, out } => {
                    (out, get(&env, *x)?.slice_axis(-1, *start, *end)?)
                }
                Op::SplitHeads { x, heads, out } => {
                    let a = get(&env, *x)?;
                    let s = a.shape();
                    let (b, t, w) = (s[0] as i32, s[1] as i32, s[2] as i32);
                    let h = *heads as i32;
                    (out, a.reshape(&[b, t, h, w / h])?.transpose(&[0, 2, 1, 3])?)
                }
                Op::MergeHeads { x, out } => {
                    let a = get(&env, *x)?;
                    let s = a.shape();
                    let (b, h, t, hd) = (s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32);
                    (out, a.transpose(&[0, 2, 1, 3])?.reshape(&[b, t, h * hd])?)
                }
                Op::Rope {
                    x,
                    dims,
                    base,
                    adjacent_pairs,
                    out,
                } => {
                    let offset = cache.as_ref().map_or(0, |c| c.position);
                    (
                        out,
                        get(&env, *x)?.rope(*dims, *adjacent_pairs, *base, offset)?,
                    )
                }
                Op::HeadGain { x, gain, out } => {
                    let g = get(&env, *gain)?;
                    let h = g.size() as i32;
                    (out, get(&env, *x)?.mul(&g.reshape(&[1, h, 1, 1])?)?)
                }
                Op::Attention {
                    q,
                    k,
                    v,
                    scale,
                    causal,
                    out,
                } => {
                    let (q, k, v) = (get(&env, *q)?, get(&env, *k)?, get(&env, *v)?);
                    match cache.as_deref_mut() {
                        None => (
                            out,
                            q.scaled_dot_product_attention(&k, &v, *scale, *causal)?,
                        ),
                        Some(c) => {
                            // Append this step's keys/values; one new query sees every cached
                            // position, a prompt uses the causal mask.
                            let (k, v) = match c.kv.get(&op_index) {
                                Some((pk, pv)) => (
                                    mixsweep_mlx::concatenate(&[pk, &k], 2)?,
                                    mixsweep_mlx::concatenate(&[pv, &v], 2)?,
                                ),
                                None => (k, v),
                            };
                            let masked = *causal && q.dim(2) > 1;
                            let y = q.scaled_dot_product_attention(&k, &v, *scale, masked)?;
                            c.kv.insert(op_index, (k, v));
                            (out, y)
                        }
                    }
                }
                Op::CausalConv1d {
                    x,
                    weight,
                    bias,
                    out,
                } => {
                    let (x, w, bias) = (get(&env, *x)?, get(&env, *weight)?, get(&env, *bias)?);
                    match cache.as_deref_mut() {
                        None => (out, causal_conv1d(&x, &w, &bias)?),
                        Some(c) => {
                            // Prepend the last K-1 inputs instead of zeros.
                            let (k, len) = (w.dim(0), x.dim(1));
                            let full = match c.conv.get(&op_index) {
                                Some(h) => mixsweep_mlx::concatenate(&[h, &x], 1)?,
                                None => x.pad_axis(1, k - 1, 0, 0.0)?,
                            };
                            let total = full.dim(1);
                            let y = causal_conv1d(&full, &w, &bias)?.slice_axis(
                                1,
                                total - len,
                                total,
                            )?;
                            c.conv
                                .insert(op_index, full.slice_axis(1, total - (k - 1), total)?);
                            (out, y)
                        }
                    }
                }
                Op::SelectiveScan {
                    x,
                    delta,
                    a_log,
                    b,
                    c,
                    d,
                    chunk,
                    out,
                } => {
                    let args = (
                        get(&env, *x)?,
                        get(&env, *delta)?,
                        get(&env, *a_log)?,
                        get(&env, *b)?,
                        get(&env, *c)?,
                        get(&env, *d)?,
                    );
                    let (x, delta, a_log, b, c, d) = args;
                    match cache.as_deref_mut() {
                        None => (out, selective_scan(&x, &delta, &a_log, &b, &c, &d, *chunk)?),
                        Some(cache) => {
                            let (y, h) = selective_scan_steps(
                                &x,
                                &delta,
                                &a_log,
                                &b,
                                &c,
                                &d,
                                *chunk,
                                cache.scan.get(&op_index),
                            )?;
                            cache.scan.insert(op_index, h);
                            (out, y)
                        }
                    }
                }
                Op::Dropout {
                    x,
                    rate,
                    ordinal,
                    out,
                } => {
                    let a = get(&env, *x)?;
                    match &dropout_keys {
                        None => (out, a),
                        Some(keys) => {
                            let key = keys.slice_axis(0, *ordinal, ordinal + 1)?.reshape(&[2])?;
                            (out, dropout(&a, *rate, &key)?)
                        }
                    }
                }
                Op::CrossEntropy {
                    logits,
                    targets,
                    out,
                } => {
                    let Some(t) = env[targets.0].clone() else {
                        continue;
                    };
                    (out, cross_entropy(&get(&env, *logits)?, &t)?)
                }
            };
            if std::env::var("MIXSWEEP_DEBUG_DTYPES").is_ok() {
                eprintln!(
                    "{} {:?} {:?}",
                    p.values[out.0].name,
                    value.shape(),
                    value.dtype()
                );
            }
            env[out.0] = Some(value);
        }
        let logits = get(&env, p.logits)?;
        let loss = env[p.loss.0].clone();
        Ok(ForwardOutput { loss, logits })
    }
}

pub fn activation(x: &Array, kind: Activation) -> Result<Array> {
    match kind {
        Activation::Silu => x.mul(&x.sigmoid()?),
        Activation::Gelu => x
            .mul(
                &x.mul_scalar(std::f32::consts::FRAC_1_SQRT_2)?
                    .erf()?
                    .add_scalar(1.0)?,
            )?
            .mul_scalar(0.5),
        Activation::GeluTanh => {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let inner = x
                .add(&x.mul(x)?.mul(x)?.mul_scalar(0.044715)?)?
                .mul_scalar(0.797_884_6)?;
            x.mul(&inner.tanh()?.add_scalar(1.0)?)?.mul_scalar(0.5)
        }
        Activation::Relu => x.maximum_scalar(0.0),
        Activation::LeakyReluSquared { slope } => x.maximum(&x.mul_scalar(slope)?)?.square(),
        Activation::Sigmoid => x.sigmoid(),
        Activation::Softplus => x.logaddexp(&Array::scalar(0.0, x.dtype()?)?),
    }
}

/// Inverted dropout: keeps each element with probability `1 - rate` and scales it by `1 / (1 - rate)`.
pub fn dropout(x: &Array, rate: f32, key: &Array) -> Result<Array> {
    let keep = random::bernoulli(1.0 - rate, &x.shape(), key)?;
    let scaled = x.mul_scalar(1.0 / (1.0 - rate))?;
    where_(&keep, &scaled, &Array::scalar(0.0, x.dtype()?)?)
}

/// Mean cross-entropy in float32 of `logits [..., V]` against integer `targets [...]`.
pub fn cross_entropy(logits: &Array, targets: &Array) -> Result<Array> {
    let logits = logits.astype(Dtype::F32)?;
    let lse = logits.logsumexp(&[-1], false)?;
    let picked = logits.take_along_axis(&targets.astype(Dtype::I32)?.expand_dims(-1)?, -1)?;
    let picked = picked.reshape(&lse.shape().iter().map(|&d| d as i32).collect::<Vec<_>>())?;
    lse.sub(&picked)?.mean_all()
}

/// `y_t = Σ_j w[j] · x_{t-K+1+j} + bias` over `x [B, T, C]`, `w [K, C]`.
pub fn causal_conv1d(x: &Array, w: &Array, bias: &Array) -> Result<Array> {
    let k = w.dim(0);
    let t = x.dim(1);
    let padded = x.pad_axis(1, k - 1, 0, 0.0)?;
    let mut acc = bias.clone();
    for j in 0..k {
        let wj = w.slice_axis(0, j, j + 1)?; // [1, C], broadcasts over [B, T, C]
        acc = acc.add(&padded.slice_axis(1, j, j + t)?.mul(&wj)?)?;
    }
    Ok(acc)
}

/// The selective scan one step at a time from state `h0 [B, I, N]` (zeros when `None`), returning
/// `y [B, L, I]` and the final state: the recurrent form used for generation. It applies the same
/// per-step log-decay floor as the chunked scan with `chunk`, so both compute the same function.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_steps(
    x: &Array,
    delta: &Array,
    a_log: &Array,
    b: &Array,
    c: &Array,
    d: &Array,
    chunk: usize,
    h0: Option<&Array>,
) -> Result<(Array, Array)> {
    let out_dtype = x.dtype()?;
    let f = |a: &Array| a.astype(Dtype::F32);
    let (x, delta, a_log, b, c, d) = (f(x)?, f(delta)?, f(a_log)?, f(b)?, f(c)?, f(d)?);
    let (bsz, len, inner) = (x.dim(0), x.dim(1), x.dim(2));
    let n = b.dim(-1);
    let a = a_log.exp()?.neg()?; // [I, N]
    let floor = -SCAN_LOG_BUDGET / chunk.max(1) as f32;
    let mut h = match h0 {
        Some(h) => h.clone(),
        None => Array::zeros(&[bsz, inner, n], Dtype::F32)?,
    };
    let mut ys = Vec::with_capacity(len);
    let step = |a3: &Array, t: usize| a3.slice_axis(1, t, t + 1);
    for t in 0..len {
        let dt = step(&delta, t)?.reshape(&[bsz as i32, inner as i32, 1])?; // [B, I, 1]
        let xt = step(&x, t)?.reshape(&[bsz as i32, inner as i32])?; // [B, I]
        let bt = step(&b, t)?.reshape(&[bsz as i32, 1, n as i32])?; // [B, 1, N]
        let ct = step(&c, t)?.reshape(&[bsz as i32, 1, n as i32])?;
        let decay = dt.mul(&a)?.maximum_scalar(floor)?.exp()?; // [B, I, N]
        let u = dt.mul(&xt.expand_dims(-1)?)?.mul(&bt)?;
        h = decay.mul(&h)?.add(&u)?;
        let y = h.mul(&ct)?.sum(&[-1], false)?.add(&xt.mul(&d)?)?; // [B, I]
        ys.push(y.expand_dims(1)?);
    }
    let refs: Vec<&Array> = ys.iter().collect();
    Ok((mixsweep_mlx::concatenate(&refs, 1)?.astype(out_dtype)?, h))
}

/// Whether the selective scan runs as one fused CUDA kernel (forward and backward) instead of the
/// chunked form: on the CUDA backend when the state size divides 32. `MIXSWEEP_SCAN=chunked` forces
/// the chunked form (for benchmarks).
pub fn use_fused_scan(state: usize) -> bool {
    let fits = state > 0 && state <= 32 && 32 % state == 0;
    match std::env::var("MIXSWEEP_SCAN").as_deref() {
        Ok("chunked") => false,
        _ => fits && mixsweep_mlx::kernels::fused_scan_available(),
    }
}

/// Mamba's selective scan `y_t = C_t h_t + D x_t` with `h_t = exp(max(dt_t A, floor)) h_{t-1} + dt_t x_t B_t`
/// and `A = -exp(a_log)`: the fused CUDA kernel where [`use_fused_scan`] says so, otherwise
/// [`selective_scan_chunked`]. Inputs `x, delta [B, T, I]`, `a_log [I, N]`, `b, c [B, T, N]`,
/// `d [I]`; runs in float32 and returns `x`'s dtype.
pub fn selective_scan(
    x: &Array,
    delta: &Array,
    a_log: &Array,
    b: &Array,
    c: &Array,
    d: &Array,
    chunk: usize,
) -> Result<Array> {
    if !use_fused_scan(b.dim(-1)) {
        return selective_scan_chunked(x, delta, a_log, b, c, d, chunk);
    }
    let out_dtype = x.dtype()?;
    let f = |a: &Array| a.astype(Dtype::F32);
    let (x, delta, a_log, b, c, d) = (f(x)?, f(delta)?, f(a_log)?, f(b)?, f(c)?, f(d)?);
    let a = a_log.exp()?.neg()?;
    let l = chunk.clamp(1, x.dim(1).max(1));
    let y = mixsweep_mlx::kernels::fused_selective_scan(&x, &delta, &a, &b, &c, l)?;
    y.add(&x.mul(&d)?)?.astype(out_dtype)
}

/// The selective scan, chunked (every backend): within a chunk of `chunk` steps the recurrence
/// `h_t = exp(a_t) h_{t-1} + u_t` is solved in parallel as `h_t = e^{S_t} (h_0 + Σ_{s≤t} e^{-S_s} u_s)`
/// with `S = cumsum(a)`; a log-depth scan over chunk end states links the chunks. Runs in float32.
pub fn selective_scan_chunked(
    x: &Array,
    delta: &Array,
    a_log: &Array,
    b: &Array,
    c: &Array,
    d: &Array,
    chunk: usize,
) -> Result<Array> {
    let out_dtype = x.dtype()?;
    let f = |a: &Array| a.astype(Dtype::F32);
    let (x, delta, a_log, b, c, d) = (f(x)?, f(delta)?, f(a_log)?, f(b)?, f(c)?, f(d)?);
    let (bsz, t, inner) = (x.dim(0), x.dim(1), x.dim(2));
    let n = b.dim(-1);
    let l = chunk.clamp(1, t.max(1));
    let chunks = t.div_ceil(l);
    let tp = chunks * l;
    let pad = |a: &Array| {
        if tp > t {
            a.pad_axis(1, 0, tp - t, 0.0)
        } else {
            Ok(a.clone())
        }
    };
    let (xp, deltap, bp, cp) = (pad(&x)?, pad(&delta)?, pad(&b)?, pad(&c)?);

    let a = a_log.exp()?.neg()?; // [I, N]
    let floor = -SCAN_LOG_BUDGET / l as f32;
    let log_decay = deltap.expand_dims(-1)?.mul(&a)?.maximum_scalar(floor)?; // [B, Tp, I, N]
    let u = deltap.mul(&xp)?.expand_dims(-1)?.mul(&bp.expand_dims(2)?)?; // [B, Tp, I, N]
    // Chunk axis next to last so that the within-chunk prefix sums are one batched matmul with a
    // lower-triangular ones matrix (fast on every backend, unlike a scan over a middle axis).
    let shape4 = [bsz as i32, chunks as i32, l as i32, (inner * n) as i32];
    let log_decay = log_decay.reshape(&shape4)?;
    let u = u.reshape(&shape4)?;
    let steps = Array::arange(0.0, l as f64, 1.0, Dtype::F32)?;
    // tril[r, c] = 1 where r >= c
    let below = steps.expand_dims(1)?.less(&steps.expand_dims(0)?)?;
    let tril = where_(
        &below,
        &Array::scalar(0.0, Dtype::F32)?,
        &Array::scalar(1.0, Dtype::F32)?,
    )?;
    let prefix = |a: &Array| tril.matmul(a);
    let s = prefix(&log_decay)?;
    let es = s.exp()?;
    let local = es.mul(&prefix(&u.mul(&s.neg()?.exp()?)?)?)?; // state with h_0 = 0
    let shape5 = [bsz as i32, chunks as i32, l as i32, inner as i32, n as i32];
    let (es, local) = (es.reshape(&shape5)?, local.reshape(&shape5)?);

    let decay_end = es.slice_axis(2, l - 1, l)?; // [B, C, 1, I, N]
    let local_end = local.slice_axis(2, l - 1, l)?;
    // Carries between chunks: an inclusive Hillis-Steele scan over the chunk axis of
    // H_c = decay_c · H_{c-1} + local_end_c (log2(chunks) vectorised steps, products of decays <= 1),
    // then shifted by one so chunk c starts from H_{c-1}.
    let shift = |a: &Array, k: usize, fill: f32| -> Result<Array> {
        a.slice_axis(1, 0, chunks - k)?.pad_axis(1, k, 0, fill)
    };
    let (mut decay, mut carry) = (decay_end, local_end);
    let mut k = 1;
    while k < chunks {
        let carry_next = carry.add(&decay.mul(&shift(&carry, k, 0.0)?)?)?;
        decay = decay.mul(&shift(&decay, k, 1.0)?)?;
        carry = carry_next;
        k *= 2;
    }
    let h0 = if chunks == 1 {
        Array::zeros(&carry.shape(), Dtype::F32)?
    } else {
        shift(&carry, 1, 0.0)?
    };
    let h = local.add(&es.mul(&h0)?)?; // [B, C, L, I, N]
    let cc = cp.reshape(&[bsz as i32, chunks as i32, l as i32, 1, n as i32])?;
    let y = h
        .mul(&cc)?
        .sum(&[-1], false)?
        .reshape(&[bsz as i32, tp as i32, inner as i32])?;
    let y = if tp > t { y.slice_axis(1, 0, t)? } else { y };
    y.add(&x.mul(&d)?)?.astype(out_dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut r = crate::rng::SplitMix64::new(seed);
        (0..n)
            .map(|_| lo + (hi - lo) * r.next_f64() as f32)
            .collect()
    }

    /// The chunked scan equals the step-by-step recurrence (for decays inside the clamp range).
    #[test]
    fn chunked_scan_matches_sequential_recurrence() {
        let (b, t, i, n) = (2, 13, 3, 4);
        let x = host(b * t * i, 1, -1.0, 1.0);
        let delta = host(b * t * i, 2, 0.01, 0.5);
        let a_log = host(i * n, 3, -1.0, 1.5);
        let bm = host(b * t * n, 4, -1.0, 1.0);
        let cm = host(b * t * n, 5, -1.0, 1.0);
        let d = host(i, 6, -1.0, 1.0);
        // reference: h_t = exp(dt*A) h + dt*x*B ; y = h.C + d*x
        let mut want = vec![0f32; b * t * i];
        for bb in 0..b {
            let mut h = vec![0f32; i * n];
            for tt in 0..t {
                for ii in 0..i {
                    let dt = delta[(bb * t + tt) * i + ii];
                    let xv = x[(bb * t + tt) * i + ii];
                    let mut y = 0f32;
                    for nn in 0..n {
                        let a = -a_log[ii * n + nn].exp();
                        let hv = &mut h[ii * n + nn];
                        *hv = (dt * a).exp() * *hv + dt * xv * bm[(bb * t + tt) * n + nn];
                        y += *hv * cm[(bb * t + tt) * n + nn];
                    }
                    want[(bb * t + tt) * i + ii] = y + d[ii] * xv;
                }
            }
        }
        let arr = |v: &[f32], s: &[usize]| Array::from_f32(v, s).unwrap();
        for chunk in [1, 4, 8, 13, 16] {
            let got = selective_scan_chunked(
                &arr(&x, &[b, t, i]),
                &arr(&delta, &[b, t, i]),
                &arr(&a_log, &[i, n]),
                &arr(&bm, &[b, t, n]),
                &arr(&cm, &[b, t, n]),
                &arr(&d, &[i]),
                chunk,
            )
            .unwrap()
            .to_vec_f32()
            .unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                    "chunk {chunk} element {k}: {g} vs {w}"
                );
            }
        }
    }

    /// On CUDA: the fused kernel's output and all five gradients equal the chunked scan's (MLX
    /// autodiff), with a partial last checkpoint chunk, a partial channel block and decays that hit
    /// the floor. Run on a GPU machine with `--ignored`.
    #[test]
    #[ignore = "needs MLX's CUDA backend: run with --ignored on an NVIDIA machine"]
    fn fused_scan_matches_chunked_scan_and_its_gradients() {
        assert!(
            mixsweep_mlx::kernels::fused_scan_available(),
            "the fused scan needs MLX's CUDA backend (libmlx of mlx-cuda-13)"
        );
        for (b, t, i, n, chunk) in [(3, 37, 40, 16, 8), (2, 16, 24, 8, 16), (1, 5, 3, 32, 4)] {
            let arr = |v: Vec<f32>, s: &[usize]| Array::from_f32(&v, s).unwrap();
            let inputs = vec![
                arr(host(b * t * i, 11, -1.0, 1.0), &[b, t, i]),
                arr(host(b * t * i, 12, 0.01, 3.0), &[b, t, i]),
                arr(host(i * n, 13, -1.0, 2.5), &[i, n]),
                arr(host(b * t * n, 14, -1.0, 1.0), &[b, t, n]),
                arr(host(b * t * n, 15, -1.0, 1.0), &[b, t, n]),
                arr(host(i, 16, -1.0, 1.0), &[i]),
            ];
            let proj = arr(host(b * t * i, 17, -1.0, 1.0), &[b, t, i]);
            let run = |fused: bool| {
                let proj = proj.clone();
                mixsweep_mlx::value_and_grad(
                    move |v| {
                        let y = if fused {
                            let a = v[2].exp()?.neg()?;
                            mixsweep_mlx::kernels::fused_selective_scan(
                                &v[0], &v[1], &a, &v[3], &v[4], chunk,
                            )?
                            .add(&v[0].mul(&v[5])?)?
                        } else {
                            selective_scan_chunked(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], chunk)?
                        };
                        Ok(vec![y.mul(&proj)?.sum_all()?, y])
                    },
                    &inputs,
                    &[0, 1, 2, 3, 4, 5],
                )
                .unwrap()
            };
            let (want_values, want_grads) = run(false);
            let (got_values, got_grads) = run(true);
            let close = |name: &str, got: &Array, want: &Array| {
                let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
                assert_eq!(g.len(), w.len(), "{name}: size");
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let err = g
                    .iter()
                    .zip(&w)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err <= 2e-3 * scale,
                    "{name} (b={b} t={t} i={i} n={n}): max error {err} vs scale {scale}"
                );
            };
            close("y", &got_values[1], &want_values[1]);
            for (k, name) in ["dx", "ddelta", "da_log", "db", "dc", "dd"]
                .iter()
                .enumerate()
            {
                close(name, &got_grads[k], &want_grads[k]);
            }
        }
    }

    #[test]
    fn causal_conv_uses_only_the_past() {
        // x = [1, 2, 3], w = [[0.5], [1]] (K=2): y_t = 0.5 x_{t-1} + x_t + bias
        let x = Array::from_f32(&[1.0, 2.0, 3.0], &[1, 3, 1]).unwrap();
        let w = Array::from_f32(&[0.5, 1.0], &[2, 1]).unwrap();
        let b = Array::from_f32(&[0.25], &[1]).unwrap();
        let y = causal_conv1d(&x, &w, &b).unwrap().to_vec_f32().unwrap();
        assert_eq!(y, vec![1.25, 2.75, 4.25]);
    }

    #[test]
    fn cross_entropy_matches_formula() {
        let logits = Array::from_f32(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[1, 2, 3]).unwrap();
        let targets = Array::from_i32(&[2, 0], &[1, 2]).unwrap();
        let got = cross_entropy(&logits, &targets)
            .unwrap()
            .item_f32()
            .unwrap();
        let l0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        let l1 = 3f32.ln();
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn activations_match_formulas() {
        let x = Array::from_f32(&[-1.0, 0.5, 2.0], &[3]).unwrap();
        let get = |k| activation(&x, k).unwrap().to_vec_f32().unwrap();
        let close = |a: Vec<f32>, b: [f32; 3]| {
            for (p, q) in a.iter().zip(b) {
                assert!((p - q).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        };
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        close(
            get(Activation::Silu),
            [-sig(-1.0), 0.5 * sig(0.5), 2.0 * sig(2.0)],
        );
        close(get(Activation::Relu), [0.0, 0.5, 2.0]);
        close(
            get(Activation::LeakyReluSquared { slope: 0.5 }),
            [0.25, 0.25, 4.0],
        );
        close(
            get(Activation::Softplus),
            [
                (1.0 + (-1f32).exp()).ln(),
                (1.0 + 0.5f32.exp()).ln(),
                (1.0 + 2f32.exp()).ln(),
            ],
        );
        // gelu(x) = x Φ(x): Φ(-1) = 0.158655, Φ(0.5) = 0.691462, Φ(2) = 0.977250
        close(
            get(Activation::Gelu),
            [-0.158_655, 0.5 * 0.691_462, 2.0 * 0.977_250],
        );
        close(
            get(Activation::GeluTanh),
            [-0.158_808, 0.345_714, 1.954_598],
        );
    }
}

#[cfg(test)]
mod dropout_tests {
    use super::*;

    #[test]
    fn dropout_zeroes_about_rate_and_rescales() {
        let x = Array::ones(&[100, 100], Dtype::F32).unwrap();
        let y = dropout(&x, 0.25, &random::key(3).unwrap())
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count() as f32 / y.len() as f32;
        assert!((zeros - 0.25).abs() < 0.03, "dropped fraction {zeros}");
        assert!(
            y.iter()
                .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
        );
    }

    #[test]
    fn dropout_is_active_in_training_and_off_in_eval() {
        let cfg = mixsweep_model::ModelConfig::from_jsonc(
            r#"{"model_dim":16,"vocab_size":32,"seq_len":8,"dropout":0.5,
                "blocks":[{"type":"plain","heads":2}],"training":{"batch_tokens":16}}"#,
        )
        .unwrap();
        let p = cfg.lower();
        assert!(p.dropout_ops >= 3);
        let host = crate::init::initial_weights(&p.weights, 1);
        let w: Vec<Array> = crate::init::upload(&p.weights, &host).unwrap();
        let toks = Array::from_i32(&(0..16).map(|i| i % 32).collect::<Vec<_>>(), &[2, 8]).unwrap();
        let exec = Executor::new(&p, ComputeDtype::Float32);
        let loss = |key: Option<&Array>| {
            exec.forward(&w, &toks, Some(&toks), key)
                .unwrap()
                .loss
                .unwrap()
                .item_f32()
                .unwrap()
        };
        let (k1, k2) = (random::key(1).unwrap(), random::key(2).unwrap());
        assert_eq!(loss(None), loss(None));
        assert_ne!(loss(Some(&k1)), loss(None));
        assert_ne!(loss(Some(&k1)), loss(Some(&k2)));
        assert_eq!(loss(Some(&k1)), loss(Some(&k1)));
    }
}
