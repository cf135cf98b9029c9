"""Independent MLX-Python reference trainer for the parity test (runner/trainer/tests/parity.rs).

Implements, from mixlab's math and without sharing code with the Rust runner, a model made of
`plain` and `swiglu` blocks and its AdamW training:
  * RMSNorm x * rsqrt(mean(x^2) + eps) * scale; RoPE on adjacent pairs (x[2i], x[2i+1]) with
    freq_i = base^(-2i/r); causal softmax attention with -inf fill; GQA by repeating kv heads;
  * plain block FFN tail on the un-normalised stream: x += ff2(silu(ff1(x)));
  * swiglu block: x += ((sigmoid(h w_gate) * (h w_up)) w_down), h = RMSNorm(x);
  * mean cross-entropy; AdamW with decoupled decay first, decay on rank-2 weights only,
    global-norm clipping with min(1, clip / (norm + 1e-6)), warmup + hold + cosine to 10%.

Usage: python3 reference.py CONFIG.json WEIGHTS.safetensors BATCHES.bin STEPS
BATCHES.bin holds STEPS x (tokens, targets) int32 arrays of shape [B, T], row-major.
Prints one JSON list: the training loss of each step (before its update).
"""
import json
import math
import sys

import array

import mlx.core as mx


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


def rms_norm(x, scale, eps):
    x32 = x.astype(mx.float32)
    return (x32 * mx.rsqrt(mx.mean(x32 * x32, axis=-1, keepdims=True) + eps)) * scale


def rope_adjacent(x, dims, base):
    # x: [B, H, T, hd]; rotate pairs (2i, 2i+1) for i < dims/2
    t = x.shape[2]
    i = mx.arange(0, dims // 2, dtype=mx.float32)
    freq = mx.power(base, -2.0 * i / dims)
    ang = mx.arange(t, dtype=mx.float32)[:, None] * freq[None, :]
    cos, sin = mx.cos(ang), mx.sin(ang)
    rot = x[..., :dims]
    a, b = rot[..., 0::2], rot[..., 1::2]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = mx.stack([ra, rb], axis=-1).reshape(rot.shape)
    return mx.concatenate([out, x[..., dims:]], axis=-1) if dims < x.shape[-1] else out


def forward(cfg, w, tokens, targets):
    d, eps = cfg["model_dim"], cfg.get("norm_eps", 1e-5)
    x = w["embed"][tokens]
    b, t = tokens.shape
    mask = mx.triu(mx.full((t, t), -mx.inf), k=1)
    for i, blk in enumerate(cfg["blocks"]):
        p = lambda n: w[f"blocks.{i}.{n}"]
        if blk["type"] == "plain":
            h_n, kv = blk["heads"], blk.get("kv_heads", blk["heads"])
            hd = d // h_n
            r = blk.get("rope_dims", 0) or hd
            h = rms_norm(x, p("norm_scale"), eps)
            q = (h @ p("wq")).reshape(b, t, h_n, hd).transpose(0, 2, 1, 3)
            k = (h @ p("wk")).reshape(b, t, kv, hd).transpose(0, 2, 1, 3)
            v = (h @ p("wv")).reshape(b, t, kv, hd).transpose(0, 2, 1, 3)
            q, k = rope_adjacent(q, r, 10000.0), rope_adjacent(k, r, 10000.0)
            if kv != h_n:
                k = mx.repeat(k, h_n // kv, axis=1)
                v = mx.repeat(v, h_n // kv, axis=1)
            s = (q @ k.transpose(0, 1, 3, 2)) / math.sqrt(hd)
            if "qk_gain" in blk:
                s = s * p("qk_gain")[None, :, None, None]
            a = mx.softmax(s + mask, axis=-1) @ v
            x = x + a.transpose(0, 2, 1, 3).reshape(b, t, d) @ p("wo")
            u = x @ p("ff1")
            x = x + (u * mx.sigmoid(u)) @ p("ff2")
        elif blk["type"] == "swiglu":
            h = rms_norm(x, p("ffn_norm_scale"), eps)
            x = x + (mx.sigmoid(h @ p("w_gate")) * (h @ p("w_up"))) @ p("w_down")
        else:
            raise SystemExit(f"reference: block type {blk['type']} not implemented")
    h = rms_norm(x, w["final_norm"], eps)
    logits = h @ (w["embed"].T if cfg.get("tie_embeddings") else w["head"])
    lse = mx.logsumexp(logits, axis=-1)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return mx.mean(lse - picked)


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


def main():
    cfg_path, weights_path, batches_path, steps = sys.argv[1:5]
    steps = int(steps)
    cfg = json.loads(strip_comments(open(cfg_path).read()))
    tc = cfg.get("training", {})
    assert tc.get("optimizer", "adamw") == "adamw" and not cfg.get("dropout")
    w = dict(mx.load(weights_path))
    names = sorted(w)
    bt, t = tc.get("batch_tokens", 1024), cfg.get("seq_len", 128)
    b = bt // t
    raw = array.array("i")
    raw.frombytes(open(batches_path, "rb").read())
    data = mx.array(raw.tolist(), dtype=mx.int32).reshape(steps, 2, b, t)
    lr0, b1, b2 = tc.get("lr", 3e-4), tc.get("beta1", 0.9), tc.get("beta2", 0.95)
    eps, wd, clip = tc.get("epsilon", 1e-8), tc.get("weight_decay", 0.01), tc.get("grad_clip", 0.0)
    m = {n: mx.zeros_like(w[n]) for n in names}
    v = {n: mx.zeros_like(w[n]) for n in names}

    def loss_fn(params, x, y):
        return forward(cfg, params, x, y)

    grad_fn = mx.value_and_grad(loss_fn)
    losses = []
    for s in range(steps):
        x, y = data[s, 0], data[s, 1]
        loss, g = grad_fn(w, x, y)
        norm = math.sqrt(sum(float(mx.sum(g[n] * g[n])) for n in names))
        scale = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
        lr = lr0 * lr_scale(tc, s, tc.get("steps", 200))
        t_ = s + 1
        for n in names:
            gn = g[n] * scale
            m[n] = b1 * m[n] + (1 - b1) * gn
            v[n] = b2 * v[n] + (1 - b2) * gn * gn
            p = w[n]
            if p.ndim >= 2:  # mixlab's matrix_only decay: embed, head and matrices
                p = p - lr * wd * p
            mhat, vhat = m[n] / (1 - b1**t_), v[n] / (1 - b2**t_)
            w[n] = p - lr * mhat / (mx.sqrt(vhat) + eps)
        mx.eval(w, m, v)
        losses.append(float(loss))
    print(json.dumps(losses))


if __name__ == "__main__":
    main()
