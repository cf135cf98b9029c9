"""Independent MLX-Python reference trainer for the parity test (runner/trainer/tests/parity.rs).

Implements, from mixlab's math (../shared/research/mixlab-spec.md §2-3) and without sharing code
with the Rust runner, models made of `plain`, `swiglu`, `geglu`, `mlp` and `gated_linear_ssm` blocks and their AdamW
training:
  * RMSNorm x * rsqrt(mean(x^2) + eps) * scale, or LayerNorm; pre, post or sandwich placement;
    RoPE on adjacent pairs (x[2i], x[2i+1]) or halves with freq_i = base^(-2i/r); causal softmax
    attention with -1e9 fill (and sliding windows); GQA by repeating kv heads; qk-norm, qk-gain,
    XSA, attention biases, shared keys and values (kv_source);
  * plain block FFN tail on the un-normalised stream: x += ff2(act(ff1(x))) (or gated);
  * swiglu block: x += ((sigmoid(h w_gate) * (h w_up)) w_down), h = Norm(x); geglu with GELU-tanh;
  * learned positions, hashed bigram/trigram channels, resid_mix, block scales, U-Net skips,
    parallel-residual pairs, depth recurrence (shared weights), logit soft-capping;
  * mean cross-entropy; global-norm clipping with min(1, clip / (norm + 1e-6)), warmup + hold +
    cosine to 10%; AdamW with decoupled decay first, decay on rank-2 weights only; Muon (mixlab's
    default) on the matrix group with MLX's own Newton-Schulz (mlx.optimizers.Muon), mixlab's
    undampened momentum, Nesterov and aspect factor; LAMB with its trust ratio.

Usage: python3 reference.py CONFIG.json WEIGHTS.safetensors BATCHES.bin STEPS
BATCHES.bin holds STEPS x (tokens, targets) int32 arrays of shape [B, T], row-major.
Prints one JSON list: the training loss of each step (before its update).
"""
import json
import math
import sys

import array

import mlx.core as mx
import mlx.optimizers


def strip_comments(src):
    out, i, in_str = [], 0, False
    while i < len(src):
        c = src[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(src[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif src.startswith("//", i):
            while i < len(src) and src[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def norm(cfg, w, name, x, kind=None, eps=None, affine=None):
    """The model's norm (or a fixed one) over the last axis, weights `name` and `name_bias`."""
    kind = kind or cfg.get("norm_type", "rmsnorm")
    eps = cfg.get("norm_eps", 1e-5) if eps is None else eps
    affine = cfg.get("norm_affine", True) if affine is None else affine
    x32 = x.astype(mx.float32)
    if kind == "rmsnorm":
        y = x32 * mx.rsqrt(mx.mean(x32 * x32, axis=-1, keepdims=True) + eps)
        return y * w[name] if affine else y
    mu = mx.mean(x32, axis=-1, keepdims=True)
    var = mx.mean((x32 - mu) ** 2, axis=-1, keepdims=True)
    y = (x32 - mu) * mx.rsqrt(var + eps)
    return y * w[name] + w[name + "_bias"] if affine else y


def rope(x, dims, base, adjacent):
    """x: [B, H, T, hd]; rotates the first `dims` features, pairs (2i, 2i+1) or (i, i + dims/2)."""
    t = x.shape[2]
    i = mx.arange(0, dims // 2, dtype=mx.float32)
    freq = mx.power(base, -2.0 * i / dims)
    ang = mx.arange(t, dtype=mx.float32)[:, None] * freq[None, :]
    cos, sin = mx.cos(ang), mx.sin(ang)
    rot = x[..., :dims]
    if adjacent:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = mx.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(rot.shape)
    else:
        a, b = rot[..., : dims // 2], rot[..., dims // 2 :]
        out = mx.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    return mx.concatenate([out, x[..., dims:]], axis=-1) if dims < x.shape[-1] else out


ACTS = {
    "silu": lambda u: u * mx.sigmoid(u),
    "relu": lambda u: mx.maximum(u, 0),
    "gelu": lambda u: 0.5 * u * (1 + mx.erf(u / math.sqrt(2))),
    "gelu_new": lambda u: 0.5 * u * (1 + mx.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3))),
    "sigmoid": mx.sigmoid,
    "leaky_relu_sq": lambda u: mx.where(u > 0, u, 0.5 * u) ** 2,
}
ACTS["geglu"], ACTS["swiglu"] = ACTS["gelu_new"], ACTS["silu"]


def scaled(cfg, w, p, name, y):
    return y * w[p + name] if cfg.get("block_scales") else y


def ngram_ids(tokens, n, size):
    """Hashed n-gram ids within each row (position < n-1 gets the sentinel)."""
    t = tokens.astype(mx.int64)
    pad = mx.zeros((t.shape[0], n - 1), dtype=mx.int64)
    ext = mx.concatenate([pad, t], axis=1)
    at = lambda back: ext[:, n - 1 - back : n - 1 - back + t.shape[1]]
    if n == 2:
        h = mx.remainder(mx.bitwise_xor(at(0) * 36313, at(1) * 27191), size - 1)
        sentinel = size - 1
    else:
        h = mx.remainder((at(2) * size + at(1)) * size + at(0), size - 1) + 1
        sentinel = 0
    pos = mx.arange(t.shape[1])[None, :]
    return mx.where(pos < n - 1, sentinel, h)


def embed(cfg, w, tokens):
    d, t = cfg["model_dim"], tokens.shape[1]
    x = w["embed"][tokens]
    if cfg.get("positional_embedding") == "learned_absolute":
        x = x + w["position_embeddings"][:t][None]
    for name, n in (("bigram", 2), ("trigram", 3)):
        size = cfg.get(f"{name}_vocab_size", 0)
        if size:
            e = w[f"{name}_table"][ngram_ids(tokens, n, size)]
            if e.shape[-1] != d:
                e = e @ w[f"{name}_proj"]
            x = x + e * w[f"{name}_scale"]
    return x


def attention(cfg, blk, w, p, h, kv_cache, i):
    d = cfg["model_dim"]
    b, t, _ = h.shape
    hn, kvh = blk["heads"], blk.get("kv_heads", blk["heads"])
    hd = d // hn
    use_rope = cfg.get("positional_embedding", "rope") == "rope"
    r = blk.get("rope_dims", 0) or hd
    base = blk.get("rope_base", 10000.0)
    adjacent = blk.get("rope_convention", "adjacent_pair") == "adjacent_pair"
    bias = blk.get("attn_bias")
    heads = lambda y, n: y.reshape(b, t, n, hd).transpose(0, 2, 1, 3)
    q = h @ w[p + "wq"] + (w[p + "q_bias"] if bias else 0)
    q = heads(q, hn)
    if blk.get("differential_attention"):
        k = heads(h @ w[p + "wk"] + (w[p + "k_bias"] if bias else 0), hn)
        v = heads(h @ w[p + "wv"] + (w[p + "v_bias"] if bias else 0), hn)
        c = differential(cfg, blk, w, p, q, k, v, i)
        o = c.transpose(0, 2, 1, 3).reshape(b, t, d) @ w[p + "wo"]
        return o + (w[p + "o_bias"] if bias else 0)
    if blk.get("qk_norm"):
        q = norm(cfg, w, p + "q_norm_scale", q, "rmsnorm", 1e-5, True)
    if use_rope:
        q = rope(q, r, base, adjacent)
    if blk.get("kv_source"):
        k, v = kv_cache[blk["kv_source"] - 1]
    else:
        k = heads(h @ w[p + "wk"] + (w[p + "k_bias"] if bias else 0), kvh)
        v = heads(h @ w[p + "wv"] + (w[p + "v_bias"] if bias else 0), kvh)
        if blk.get("qk_norm"):
            k = norm(cfg, w, p + "k_norm_scale", k, "rmsnorm", 1e-5, True)
        if use_rope:
            k = rope(k, r, base, adjacent)
    kv_cache[i] = (k, v)
    if kvh != hn:
        k, v = mx.repeat(k, hn // kvh, axis=1), mx.repeat(v, hn // kvh, axis=1)
    s = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd)
    if "qk_gain" in blk:
        s = s * w[p + "qk_gain"][None, :, None, None]
    qi, kj = mx.arange(t)[:, None], mx.arange(t)[None, :]
    keep = kj <= qi
    if blk.get("window_size"):
        keep = keep & (kj >= qi - blk["window_size"] + 1)
    c = mx.softmax(mx.where(keep, s, -1e9), axis=-1) @ v
    if blk.get("xsa"):
        c = c - (mx.sum(c * v, -1, keepdims=True) / (mx.sum(v * v, -1, keepdims=True) + 1e-8)) * v
    o = c.transpose(0, 2, 1, 3).reshape(b, t, d) @ w[p + "wo"]
    return o + (w[p + "o_bias"] if bias else 0)


def differential(cfg, blk, w, p, q, k, v, i):
    """DIFF Transformer attention of [B, H, T, hd] heads, as mixlab's arch/differential_attention.go:
    two softmax maps of the half-width sub-heads (each rotated on its own), their difference weighted
    by the layer's lambda, applied to v, then RMSNorm (eps 1e-3) and (1 - lambda_init)."""
    t, hd = q.shape[2], q.shape[-1]
    s = hd // 2
    lam_init = blk.get("differential_lambda_init", 0.8 - 0.6 * math.exp(-0.3 * (i + 1)))
    use_rope = cfg.get("positional_embedding", "rope") == "rope"
    r = blk.get("rope_dims", 0) or s
    base = blk.get("rope_base", 10000.0)
    adjacent = blk.get("rope_convention", "adjacent_pair") == "adjacent_pair"
    qi, kj = mx.arange(t)[:, None], mx.arange(t)[None, :]
    keep = kj <= qi
    if blk.get("window_size"):
        keep = keep & (kj >= qi - blk["window_size"] + 1)

    def amap(qq, kk):
        if use_rope:
            qq, kk = rope(qq, r, base, adjacent), rope(kk, r, base, adjacent)
        sc = (qq @ kk.transpose(0, 1, 3, 2)) / math.sqrt(s)
        return mx.softmax(mx.where(keep, sc, -1e9), axis=-1)

    def exp_dot(n):
        dot = mx.sum(w[p + f"lambda_q{n}"] * w[p + f"lambda_k{n}"])
        return mx.exp(mx.clip(dot, -5.0, 5.0))

    lam = exp_dot(1) - exp_dot(2) + lam_init
    a = amap(q[..., :s], k[..., :s]) - lam * amap(q[..., s:], k[..., s:])
    c = norm(cfg, w, p + "subln_scale", a @ v, "rmsnorm", 1e-3, True)
    return c * (1 - lam_init)


def plain_rest(cfg, blk, w, p, x, h, kv_cache, i):
    """The plain block after its input norm: attention residual, then the FFN tail."""
    place = cfg.get("norm_placement", "pre")
    o = attention(cfg, blk, w, p, h, kv_cache, i)
    if place in ("post", "sandwich"):
        o = norm(cfg, w, p + "post_attn_norm", o)
    x = x + scaled(cfg, w, p, "attn_scale", o)
    tail = norm(cfg, w, p + "ffn_norm", x) if blk.get("ffn_pre_norm") or place == "sandwich" else x
    act = blk.get("ffn_activation", "silu")
    u = tail @ w[p + "ff1"]
    a = ACTS[act](tail @ w[p + "ff_gate"]) * u if act in ("geglu", "swiglu") else ACTS[act](u)
    y = a @ w[p + "ff2"]
    if place in ("post", "sandwich"):
        y = norm(cfg, w, p + "post_ffn_norm", y)
    return x + scaled(cfg, w, p, "mlp_scale", y)


def ffn_delta(cfg, blk, w, p, h):
    kind = blk["type"]
    if kind == "mlp":
        act = blk.get("activation", "silu")
        u = h @ w[p + "w_up"]
        if act == "leaky_relu_sq":
            a = mx.where(u > 0, u, blk.get("leaky_slope", 0.5) * u) ** 2
        else:
            a = ACTS[act](u)
        return a @ w[p + "w_down"]
    gate = mx.sigmoid if kind == "swiglu" else ACTS["gelu_new"]
    return (gate(h @ w[p + "w_gate"]) * (h @ w[p + "w_up"])) @ w[p + "w_down"]


def scaled_delta(cfg, blk, w, p, y):
    """mlp blocks have no block scale (as in mixlab); swiglu and geglu do."""
    return y if blk["type"] == "mlp" else scaled(cfg, w, p, "mlp_scale", y)


def block(cfg, blk, w, p, x, x0, kv_cache, i):
    place = cfg.get("norm_placement", "pre")
    if blk["type"] == "plain":
        if cfg.get("resid_mix"):
            m = w[p + "resid_mix"]
            x = m[0] * x + m[1] * x0
        h = norm(cfg, w, p + "norm_scale", x) if place != "post" else x
        return plain_rest(cfg, blk, w, p, x, h, kv_cache, i)
    if blk["type"] in ("swiglu", "geglu", "mlp"):
        h = norm(cfg, w, p + "ffn_norm_scale", x) if place != "post" else x
        y = ffn_delta(cfg, blk, w, p, h)
        if place in ("post", "sandwich"):
            y = norm(cfg, w, p + "post_ffn_norm", y)
        return x + scaled_delta(cfg, blk, w, p, y)
    if blk["type"] == "gated_linear_ssm":
        h = norm(cfg, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)
        z = ACTS["silu"](h @ w[p + "w_gate"])
        u = (h @ w[p + "w_ssm"]) * mx.sigmoid(h @ w[p + "w_dt"])
        g = mx.sigmoid(w[p + "scan_decay"])
        s, states = mx.zeros_like(u[:, 0]), []
        for t in range(u.shape[1]):  # the recurrence step by step
            s = g * s + (1 - g) * u[:, t]
            states.append(s)
        return x + (z * mx.stack(states, axis=1)) @ w[p + "wo"]
    if blk["type"] == "legacy_mamba":
        i = w[p + "scan_decay"].shape[0]
        pr = x @ w[p + "in_proj"]
        z, u = pr[..., :i], pr[..., i:] @ w[p + "conv_w"]
        g = mx.sigmoid(w[p + "scan_decay"])
        s, states = mx.zeros_like(u[:, 0]), []
        for t in range(u.shape[1]):
            s = g * s + (1 - g) * u[:, t]
            states.append(s)
        return x + (mx.stack(states, axis=1) * ACTS["silu"](z)) @ w[p + "out_proj"]
    if blk["type"] == "retnet":
        return retnet(blk, w, p, x)
    if blk["type"] == "rwkv":
        return rwkv(w, p, x)
    if blk["type"] == "moe":
        return moe(cfg, blk, w, p, x)
    if blk["type"] == "mlstm":
        return mlstm(blk, w, p, x)
    if blk["type"] == "cross_attention":
        return cross_attention(cfg, blk, w, p, x)
    if blk["type"] == "hgrn2":
        return hgrn2(blk, w, p, x)
    if blk["type"] == "mamba3-canonical":
        return mamba3_canonical(blk, w, p, x)
    if blk["type"] == "gated_deltanet":
        return x + scaled(cfg, w, p, "gated_deltanet_scale", gated_deltanet(blk, w, p, x))
    if blk["type"] == "s4d":
        h = norm(cfg, w, p + "s4d_norm", x) if place != "post" else x
        y = s4d(cfg, blk, w, p, h)
        if place in ("post", "sandwich"):
            y = norm(cfg, w, p + "s4d_post_norm", y)
        return x + scaled(cfg, w, p, "s4d_scale", y)
    if blk["type"] in ("perceiver", "bottleneck"):
        return perceiver(cfg, blk, w, p, x)
    raise SystemExit(f"reference: block type {blk['type']} not implemented")


AUX = []  # auxiliary losses of the current forward pass
STREAMS = {}  # "embedding" and "block:K" streams of the current forward pass


def cross_attention(cfg, blk, w, p, x):
    """Position i attends to source positions j <= i, one query at a time; then the SiLU tail."""
    b, t, d = x.shape
    hn = blk["heads"]
    hd = d // hn
    src = STREAMS[blk["source_stream"]]
    h = norm(None, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)
    q = (h @ w[p + "wq"]).reshape(b, t, hn, hd)
    k = (src @ w[p + "wk"]).reshape(b, t, hn, hd)
    v = (src @ w[p + "wv"]).reshape(b, t, hn, hd)
    outs = []
    for i in range(t):
        s = mx.sum(q[:, i : i + 1] * k[:, : i + 1], axis=-1) / math.sqrt(hd)
        outs.append(mx.sum(mx.softmax(s, axis=1)[..., None] * v[:, : i + 1], axis=1).reshape(b, d))
    x = x + mx.stack(outs, axis=1) @ w[p + "wo"]
    return x + ACTS["silu"](x @ w[p + "ff1"]) @ w[p + "ff2"]


def moe(cfg, blk, w, p, x):
    """Top-k routed experts, each evaluated token by token's gate; the load-balancing loss to AUX."""
    e = blk["num_experts"]
    k = blk.get("top_k", min(2, e))
    h = norm(cfg, w, p + "moe_norm_scale", x, "rmsnorm", 1e-5, True)
    probs = mx.softmax(h @ w[p + "router_w"], axis=-1)
    kth = mx.min(mx.topk(probs, k, axis=-1), axis=-1, keepdims=True)
    sel = (probs >= mx.stop_gradient(kth)).astype(mx.float32)
    gates = probs * sel / mx.sum(probs * sel, axis=-1, keepdims=True)
    kind = blk.get("expert_block", {}).get("type", "swiglu")
    y = 0
    for i in range(e):
        q = f"{p}expert_{i}_"
        if kind == "mlp":
            out = ACTS[blk["expert_block"].get("activation", "silu")](h @ w[q + "w_up"]) @ w[q + "w_down"]
        else:
            gate = mx.sigmoid if kind == "swiglu" else ACTS["gelu_new"]
            out = (gate(h @ w[q + "w_gate"]) * (h @ w[q + "w_up"])) @ w[q + "w_down"]
        y = y + gates[..., i : i + 1] * out
    weight = blk.get("load_balance_loss_weight", 0.01)
    if weight > 0:
        importance = mx.mean(probs, axis=(0, 1))
        load = mx.mean(mx.stop_gradient(sel), axis=(0, 1))
        AUX.append(weight * e * mx.sum(importance * load) / k)
    return x + y


def perceiver(cfg, blk, w, p, x):
    """Causal perceiver, one latent and one token at a time: latent j reads tokens t <= e_j,
    token t reads latents with e_j <= t (zeros when none)."""
    b, t, d = x.shape
    hn = blk["heads"]
    hd = d // hn
    n = blk.get("num_latents", 32 if blk["type"] == "perceiver" else 4)
    seg = -(-cfg["seq_len"] // n)
    ends = [(j + 1) * seg - 1 for j in range(n)]
    heads = lambda y: y.reshape(y.shape[0], y.shape[1], hn, hd)

    def attend(q, k, v):  # q [B, H, hd], k/v [B, S, H, hd] -> [B, D]
        s = mx.sum(q[:, None] * k, axis=-1) / math.sqrt(hd)  # [B, S, H]
        return mx.sum(mx.softmax(s, axis=1)[..., None] * v, axis=1).reshape(q.shape[0], d)

    z = mx.broadcast_to(w[p + "latent_init"][None], (b, n, d))
    q, k, v = heads(z @ w[p + "wq_cross"]), heads(x @ w[p + "wk_cross"]), heads(x @ w[p + "wv_cross"])
    read = [attend(q[:, j], k[:, : ends[j] + 1], v[:, : ends[j] + 1]) for j in range(n)]
    z = z + mx.stack(read, axis=1) @ w[p + "wo_cross"]
    q, k, v = heads(z @ w[p + "wq_self"]), heads(z @ w[p + "wk_self"]), heads(z @ w[p + "wv_self"])
    q = rope(q.transpose(0, 2, 1, 3), hd, 10000.0, True).transpose(0, 2, 1, 3)
    k = rope(k.transpose(0, 2, 1, 3), hd, 10000.0, True).transpose(0, 2, 1, 3)
    mixed = [attend(q[:, j], k[:, : j + 1], v[:, : j + 1]) for j in range(n)]
    z = z + mx.stack(mixed, axis=1) @ w[p + "wo_self"]
    q, k, v = heads(x @ w[p + "wq_broad"]), heads(z @ w[p + "wk_broad"]), heads(z @ w[p + "wv_broad"])
    outs = []
    for i in range(t):
        seen = sum(1 for e in ends if e <= i)
        outs.append(attend(q[:, i], k[:, :seen], v[:, :seen]) if seen else mx.zeros((b, d)))
    x = x + mx.stack(outs, axis=1) @ w[p + "wo_broad"]
    return x + ACTS["silu"](x @ w[p + "ff1"]) @ w[p + "ff2"]


def hgrn2(blk, w, p, x):
    """HGRN2 with its matrix state updated token by token."""
    b, t, d = x.shape
    hn = blk["heads"]
    ds = blk.get("d_state", d // hn)
    dv = d // hn
    h = norm(None, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)
    v = ACTS["silu"](h @ w[p + "w_v"]).reshape(b, t, hn, dv)
    q = mx.sigmoid(h @ w[p + "w_q"]).reshape(b, t, hn, ds)
    g = mx.sigmoid(h @ w[p + "w_f"]).reshape(b, t, hn, ds)
    state, outs = mx.zeros((b, hn, ds, dv)), []
    for i in range(t):
        state = g[:, i, :, :, None] * state + (1 - g[:, i])[..., None] * v[:, i, :, None, :]
        o = mx.sum(q[:, i, :, :, None] * state, axis=2)  # [B, H, dv]
        outs.append(norm(None, w, p + "o_norm_scale", o, "rmsnorm", 1e-5, True).reshape(b, d))
    return x + mx.stack(outs, axis=1) @ w[p + "wo"]


def gated_deltanet(blk, w, p, x):
    """The gated delta rule with each head's [d_k, d_v] state updated token by token."""
    b, t, d = x.shape
    hn, dk = blk["heads"], blk["d_k"]
    dv = blk.get("d_v", 2 * dk)
    h = norm(None, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)

    def conv(u, name):  # causal depthwise, weights [4, C] oldest tap first, then SiLU
        cw = w[p + name]
        padded = mx.concatenate([mx.zeros((b, cw.shape[0] - 1, u.shape[-1])), u], axis=1)
        return ACTS["silu"](sum(padded[:, j:j + t] * cw[j] for j in range(cw.shape[0])))

    q = conv(h @ w[p + "wq"], "q_conv")
    if blk.get("kv_share", True):
        kv = h @ w[p + "w_kv"]
        k = conv(kv.reshape(b, t, hn, dv)[..., :dk].reshape(b, t, hn * dk), "k_conv")
        v = conv(kv, "v_conv")
    else:
        k = conv(h @ w[p + "wk"], "k_conv")
        v = conv(h @ w[p + "wv"], "v_conv")

    def unit(u):
        u = u.reshape(b, t, hn, dk)
        return u / mx.sqrt(mx.sum(u * u, axis=-1, keepdims=True) + dk * 1e-6)

    q, k, v = unit(q) / math.sqrt(dk), unit(k), v.reshape(b, t, hn, dv)
    dt = mx.logaddexp(h @ w[p + "w_a"] + w[p + "dt_bias"], 0.0)
    alpha = mx.exp(-dt * mx.exp(w[p + "A_log"]))
    beta = mx.sigmoid(h @ w[p + "w_beta"])
    state, outs = mx.zeros((b, hn, dk, dv)), []
    for i in range(t):
        ki, vi = k[:, i], v[:, i]
        a, be = alpha[:, i, :, None, None], beta[:, i, :, None]
        decayed = a * state
        err = vi - mx.sum(decayed * ki[..., None], axis=2)  # v - S^T k
        state = decayed + ki[..., None] * (be * err)[:, :, None, :]
        outs.append(mx.sum(state * q[:, i, :, :, None], axis=2))  # [B, H, dv]
    o = norm(None, w, p + "o_norm_scale", mx.stack(outs, axis=1), "rmsnorm", 1e-5, True)
    g = ACTS["silu"](h @ w[p + "w_out_gate"]).reshape(b, t, hn, dv)
    return (o * g).reshape(b, t, hn * dv) @ w[p + "wo"]


def s4d(cfg, blk, w, p, h):
    """S4D (zero-order hold, B = 1): the complex diagonal recurrence token by token."""
    b, t, d = h.shape
    g = blk.get("n_ssm", d)
    reps = d // g
    dt = mx.exp(w[p + "s4d_log_dt"])[:, None]
    a_re = mx.concatenate([-mx.exp(w[p + "s4d_log_A_real"])] * reps, axis=0)
    a_im = mx.concatenate([w[p + "s4d_A_imag"]] * reps, axis=0)
    lam_abs = mx.exp(dt * a_re)
    lam_re, lam_im = lam_abs * mx.cos(dt * a_im), lam_abs * mx.sin(dt * a_im)
    # C' = C (lambda - 1) / A
    den = a_re * a_re + a_im * a_im
    q_re = ((lam_re - 1) * a_re + lam_im * a_im) / den
    q_im = (lam_im * a_re - (lam_re - 1) * a_im) / den
    c_re, c_im = w[p + "s4d_C_real"], w[p + "s4d_C_imag"]
    cp_re, cp_im = c_re * q_re - c_im * q_im, c_re * q_im + c_im * q_re
    s_re = mx.zeros((b, d, a_re.shape[1]))
    s_im = mx.zeros_like(s_re)
    outs = []
    for j in range(t):
        u = h[:, j, :, None]
        s_re, s_im = lam_re * s_re - lam_im * s_im + u, lam_re * s_im + lam_im * s_re
        outs.append(2 * mx.sum(cp_re * s_re - cp_im * s_im, axis=-1))
    y = mx.stack(outs, axis=1) + w[p + "s4d_D"] * h
    if blk.get("output_transform", "none") != "glu":
        return ACTS["gelu_new"](y)
    y = ACTS["gelu"](y) @ w[p + "s4d_out_proj"] + w[p + "s4d_out_bias"]
    return y[..., :d] * mx.sigmoid(y[..., d:])


def mamba3_canonical(blk, w, p, x):
    """Mamba-3's exponential-trapezoidal recurrence with rotating B, C, token by token."""
    b, t, d = x.shape
    i = blk.get("inner_dim", d)
    n = blk.get("state_size", 16)
    g = blk.get("n_groups", 4)
    h = norm(None, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)
    u = h @ w[p + "w_x"]
    if blk.get("use_conv", True):
        cw = w[p + "conv_w"]  # [K, I], oldest tap first
        k = cw.shape[0]
        padded = mx.concatenate([mx.zeros((b, k - 1, i)), u], axis=1)
        u = sum(padded[:, j:j + t] * cw[j] for j in range(k))

    def low_rank(name):
        return (u @ w[p + f"w_{name}_low"]) @ w[p + f"w_{name}_high"]

    delta = mx.logaddexp(low_rank("dt") + w[p + "dt_bias"], 0.0)
    lam = mx.sigmoid(low_rank("lambda"))
    theta = low_rank("theta").reshape(b, t, i, n // 2)

    def grouped(name):
        v = (u @ w[p + f"w_{name}"]).reshape(b, t, g, n)
        v = norm(None, w, p + f"{name}_norm", v, "rmsnorm", 1e-5, True) + w[p + f"{name}_bias"].reshape(g, n)
        return mx.repeat(v, i // g, axis=2)  # [B, T, I, N]

    bb, cc = grouped("B"), grouped("C")
    a = -mx.exp(w[p + "A_log"])

    def rotate(v, phase):
        re, im = v[..., 0::2], v[..., 1::2]
        c, s_ = mx.cos(phase), mx.sin(phase)
        return mx.stack([c * re + s_ * im, c * im - s_ * re], axis=-1).reshape(v.shape)

    state = mx.zeros((b, i, n))
    phase = mx.zeros((b, i, n // 2))
    prev = mx.zeros((b, i, n))
    outs = []
    for j in range(t):
        dj, lj = delta[:, j, :, None], lam[:, j, :, None]
        phase = phase + dj * theta[:, j]
        bj, cj = rotate(bb[:, j], phase), rotate(cc[:, j], phase)
        alpha = mx.exp(dj * a)
        cur = bj * u[:, j, :, None]
        state = alpha * state + (1 - lj) * dj * alpha * prev + lj * dj * cur
        prev = cur
        outs.append(mx.sum(state * cj, axis=-1))
    y = norm(None, w, p + "post_norm", mx.stack(outs, axis=1), "rmsnorm", 1e-5, True)
    z = ACTS["silu"](h @ w[p + "w_gate"])
    return x + (y * z) @ w[p + "w_out"]


def mlstm(blk, w, p, x):
    """mLSTM with its stabiliser, matrix memory and normaliser updated token by token."""
    b, t, d = x.shape
    hn, dk, dv = blk["heads"], blk["d_k"], blk["d_v"]
    h = norm(None, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)
    q = (h @ w[p + "wq"]).reshape(b, t, hn, dk) / math.sqrt(dk)
    k = (h @ w[p + "wk"]).reshape(b, t, hn, dk)
    v = (h @ w[p + "wv"]).reshape(b, t, hn, dv)
    ig = h @ w[p + "w_i"] + w[p + "b_i"]
    fg = h @ w[p + "w_f"] + w[p + "b_f"]
    c, n, m_prev, outs = mx.zeros((b, hn, dk, dv)), mx.zeros((b, hn, dk)), mx.zeros((b, hn)), []
    for i in range(t):
        m = mx.maximum(fg[:, i] + m_prev, ig[:, i])
        f = mx.exp(fg[:, i] + m_prev - m)[..., None]
        a = mx.exp(ig[:, i] - m)[..., None]
        n = f * n + a * k[:, i]
        c = f[..., None] * c + (a * k[:, i])[..., None] * v[:, i, :, None, :]
        m_prev = m
        num = mx.sum(q[:, i, :, :, None] * c, axis=2)
        den = mx.maximum(mx.abs(mx.sum(q[:, i] * n, axis=-1)), 1.0)[..., None]
        outs.append(norm(None, w, p + "o_norm_scale", num / den, "rmsnorm", 1e-5, True).reshape(b, hn * dv))
    o = mx.stack(outs, axis=1) * mx.sigmoid(h @ w[p + "w_out_gate"])
    return x + o @ w[p + "wo"]


def retnet(blk, w, p, x):
    """Token by token: query i attends to keys j <= i with weights exp(q.k/sqrt(hd) - lambda (i - j))."""
    b, t, d = x.shape
    hn = blk["heads"]
    hd = d // hn
    h = norm(None, w, p + "norm_scale", x, "rmsnorm", 1e-5, True)
    heads = lambda y: y.reshape(b, t, hn, hd)
    q, k, v = heads(h @ w[p + "wq"]), heads(h @ w[p + "wk"]), heads(h @ w[p + "wv"])
    lam = mx.sigmoid(w[p + "decay"])  # [H]
    outs = []
    for i in range(t):
        s = mx.sum(q[:, i : i + 1] * k[:, : i + 1], axis=-1) / math.sqrt(hd)  # [B, i+1, H]
        s = s - lam[None, None, :] * (i - mx.arange(i + 1))[None, :, None]
        a = mx.softmax(s, axis=1)
        outs.append(mx.sum(a[..., None] * v[:, : i + 1], axis=1).reshape(b, d))
    x = x + mx.stack(outs, axis=1) @ w[p + "wo"]
    return x + ACTS["silu"](x @ w[p + "ff1"]) @ w[p + "ff2"]


def rwkv(w, p, x):
    """RWKV time and channel mixing with the recurrences run step by step."""
    def shift(y, mu):
        prev = mx.concatenate([mx.zeros_like(y[:, :1]), y[:, :-1]], axis=1)
        m = mx.sigmoid(w[p + mu])
        return (1 - m) * y + m * prev
    s = shift(x, "mu")
    r = mx.sigmoid(s @ w[p + "wr"])
    k = mx.clip(s @ w[p + "wk"], -60, 30)
    v = s @ w[p + "wv"]
    decay = mx.exp(-mx.exp(w[p + "w_decay"]))
    num, den, outs = mx.zeros_like(v[:, 0]), mx.zeros_like(v[:, 0]), []
    for t in range(x.shape[1]):
        e = mx.exp(k[:, t])
        num = decay * num + e * v[:, t]
        den = decay * den + e
        outs.append(num / (den + 1e-6))
    x = x + (r * mx.stack(outs, axis=1)) @ w[p + "wo"]
    s = shift(x, "mu2")
    return x + mx.sigmoid(s @ w[p + "wr2"]) * (mx.maximum(s @ w[p + "wk2"], 0) ** 2 @ w[p + "wv2"])


def roots(cfg):
    blocks = cfg["blocks"]
    if "recurrence" in cfg:
        r = list(cfg["recurrence"])
        for i in range(len(r)):
            while r[r[i]] != r[i]:
                r[i] = r[r[i]]
        return r
    first = {}
    return [first.setdefault(b["weight_group"], i) if "weight_group" in b else i for i, b in enumerate(blocks)]


def forward(cfg, w, tokens, targets):
    AUX.clear()
    blocks, n = cfg["blocks"], len(cfg["blocks"])
    x = embed(cfg, w, tokens)
    x0, kv_cache, root = x, {}, roots(cfg)
    STREAMS.clear()
    STREAMS["embedding"] = x
    unet = cfg.get("unet", False)
    n_enc = n // 2 if unet else n
    n_skip = min(n_enc, n - n_enc)
    enc, i = [], 0
    while i < n:
        p = f"blocks.{root[i]}."
        if unet and i >= n_enc:
            j = i - n_enc
            x = x + enc[max(0, n_enc - 1 - j)] * w[f"unet.skip_{min(j, n_skip - 1)}"]
        if cfg.get("parallel_residual") and blocks[i]["type"] == "plain" and i + 1 < n:
            h = norm(cfg, w, p + "norm_scale", x)
            state = plain_rest(cfg, blocks[i], w, p, x, h, kv_cache, i)
            q = f"blocks.{root[i + 1]}."
            x = state + scaled_delta(cfg, blocks[i + 1], w, q, ffn_delta(cfg, blocks[i + 1], w, q, h))
            i += 2
            continue
        x = block(cfg, blocks[i], w, p, x, x0, kv_cache, i)
        STREAMS[f"block:{i + 1}"] = x
        if unet and i < n_enc:
            enc.append(x)
        i += 1
    h = norm(cfg, w, "final_norm", x) if cfg.get("final_norm", True) else x
    logits = h @ (w["embed"].T if cfg.get("tie_embeddings") else w["head"])
    if cfg.get("logit_softcap"):
        c = cfg["logit_softcap"]
        logits = c * mx.tanh(logits / c)
    lse = mx.logsumexp(logits, axis=-1)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    aux = sum(AUX, mx.array(0.0))
    AUX.clear()
    return mx.mean(lse - picked) + aux


def lr_scale(tc, step, steps):
    w, hold = tc.get("warmup_steps", min(100, steps)), tc.get("hold_steps", 200)
    horizon = tc.get("lr_schedule_steps", steps)
    floor = tc.get("min_lr_fraction", 0) or 0.1
    if step < w:
        return step / w
    if step < w + hold or horizon <= w + hold:
        return 1.0
    p = min(1.0, (step - w - hold) / (horizon - w - hold))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def group(name, p):
    """mixlab's parameter groups (§6.1): embed, head, scalar (1-D), matrix (other 2-D)."""
    leaf = name.split(".")[-1]
    if leaf == "embed" or leaf.endswith("_table") or leaf == "position_embeddings":
        return "embed"
    if leaf == "head":
        return "head"
    if leaf == "A_log" or (leaf.startswith("s4d_") and leaf != "s4d_out_proj"):
        return "scalar"  # SSM dynamics: scalar group (no decay, never Muon), as the runner
    return "scalar" if p.ndim == 1 else "matrix"


def newton_schulz(u, steps):
    """MLX's own Muon orthogonalisation (mlx.optimizers.Muon), on an [in, out] matrix."""
    return mlx.optimizers.Muon(learning_rate=0.0)._zeropower_via_newtonschulz5(u, steps)


class Optimizer:
    """mixlab §6.3: AdamW, Muon (matrix group; AdamW elsewhere) and LAMB, written from the spec."""

    def __init__(self, tc, w):
        self.tc = tc
        self.kind = tc.get("optimizer", "muon")
        self.b1, self.b2 = tc.get("beta1", 0.9), tc.get("beta2", 0.95)
        self.eps, self.wd = tc.get("epsilon", 1e-8), tc.get("weight_decay", 0.01)
        self.mu = tc.get("muon_momentum", self.b1)
        self.ns_steps = tc.get("muon_backend_steps", 5)
        self.nesterov = tc.get("muon_nesterov", True)
        self.lamb = (tc.get("lamb_beta1", 0.9), tc.get("lamb_beta2", 0.999), tc.get("lamb_eps", 1e-6),
                     tc.get("lamb_trust_ratio_cap", 10.0))
        self.m = {n: mx.zeros_like(p) for n, p in w.items()}
        self.v = {n: mx.zeros_like(p) for n, p in w.items()}

    def rule(self, name, p):
        if self.kind == "lamb":
            return "lamb"
        if self.kind == "muon" and group(name, p) == "matrix":
            return "muon"
        return "adamw"

    def update(self, name, p, g, lr, t):
        # mixlab's matrix_only decay: embed, head and matrices, each at its group's rate
        wd = self.tc.get(group(name, p) + "_weight_decay", self.wd) if p.ndim >= 2 else 0.0
        rule = self.rule(name, p)
        if rule == "muon":
            m = self.mu * self.m[name] + g
            self.m[name] = m
            u = g + self.mu * m if self.nesterov else m
            o = newton_schulz(u, self.ns_steps) * math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
            return p - lr * wd * p - lr * o
        b1, b2, eps = (self.b1, self.b2, self.eps) if rule == "adamw" else self.lamb[:3]
        self.m[name] = b1 * self.m[name] + (1 - b1) * g
        self.v[name] = b2 * self.v[name] + (1 - b2) * g * g
        mhat, vhat = self.m[name] / (1 - b1**t), self.v[name] / (1 - b2**t)
        if rule == "adamw":
            p = p - lr * wd * p
            return p - lr * mhat / (mx.sqrt(vhat) + eps)
        u = mhat / (mx.sqrt(vhat) + eps) + wd * p
        wn, un = float(mx.sqrt(mx.sum(p * p))), float(mx.sqrt(mx.sum(u * u)))
        r = wn / un if wn > 0 and un > 0 and math.isfinite(wn / un) else 1.0
        cap = self.lamb[3]
        r = min(r, cap) if cap > 0 else r
        return p - lr * r * u


def main():
    cfg_path, weights_path, batches_path, steps = sys.argv[1:5]
    steps = int(steps)
    cfg = json.loads(strip_comments(open(cfg_path).read()))
    tc = cfg.get("training", {})
    assert not cfg.get("dropout")
    w = dict(mx.load(weights_path))
    names = sorted(w)
    bt, t = tc.get("batch_tokens", 1024), cfg.get("seq_len", 128)
    b = bt // t
    raw = array.array("i")
    raw.frombytes(open(batches_path, "rb").read())
    data = mx.array(raw.tolist(), dtype=mx.int32).reshape(steps, 2, b, t)
    lr0, clip = tc.get("lr", 3e-4), tc.get("grad_clip", 0.0)
    opt = Optimizer(tc, w)

    def loss_fn(params, x, y):
        return forward(cfg, params, x, y)

    grad_fn = mx.value_and_grad(loss_fn)
    losses = []
    for s in range(steps):
        x, y = data[s, 0], data[s, 1]
        loss, g = grad_fn(w, x, y)
        norm = math.sqrt(sum(float(mx.sum(g[n] * g[n])) for n in names))
        scale = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
        k = lr_scale(tc, s, tc.get("steps", 200))
        for n in names:
            lr = k * tc.get(group(n, w[n]) + "_lr", lr0)  # each group's peak follows the schedule
            w[n] = opt.update(n, w[n], g[n] * scale, lr, s + 1)
        mx.eval(w, opt.m, opt.v)
        losses.append(float(loss))
    print(json.dumps(losses))


if __name__ == "__main__":
    main()
