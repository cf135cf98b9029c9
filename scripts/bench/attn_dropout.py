"""Where nanoGPT's attention-dropout step time goes (issue 14 §4): forward+backward of one attention
layer's core at nanoGPT's shape (B=64, H=6, T=256, d=64, bf16), timed in MLX for the fused SDPA and
written-out variants with different dropout-mask generators. Run on the GPU machine:
    python3 scripts/bench/attn_dropout.py
"""
import os
import time

import mlx.core as mx

B, H, T, D = int(os.environ.get("B", 64)), 6, 256, 64
RATE = 0.2


def causal(dtype):
    i = mx.arange(T)
    return mx.where(i[:, None] >= i[None, :], 0.0, -1e9).astype(dtype)


def written(q, k, v, drop, f32_scores, key):
    s = (q @ k.transpose(0, 1, 3, 2)) * (D**-0.5)
    if f32_scores:
        s = s.astype(mx.float32) + causal(mx.float32)
        p = mx.softmax(s, axis=-1, precise=True).astype(q.dtype)
    else:
        s = s + causal(q.dtype)
        p = mx.softmax(s, axis=-1, precise=True)
    if drop == "bernoulli":
        keep = mx.random.bernoulli(1 - RATE, p.shape, key=key)
        p = mx.where(keep, p * (1 / (1 - RATE)), 0)
    elif drop in ("u16", "ubf16"):  # uniform from 16 random bits per element (MLX: bits of the dtype's width)
        dt = mx.float16 if drop == "u16" else mx.bfloat16
        keep_p = mx.array(1 - RATE, dt)
        keep = mx.random.uniform(shape=p.shape, dtype=dt, key=key) < keep_p
        p = mx.where(keep, p * (1 / keep_p.item()), 0)
    elif drop == "hash":  # murmur3's finaliser of (position, seed): elementwise, fused by compile
        seed = key.reshape(-1)[0]
        bh = (mx.arange(B * H, dtype=mx.uint32) * (T * T)).reshape(B, H, 1, 1)
        ij = mx.arange(T * T, dtype=mx.uint32).reshape(1, 1, T, T)
        h = (bh + ij) * 0x9E3779B1 + seed
        h = h ^ (h >> 16)
        h = h * 0x85EBCA6B
        h = h ^ (h >> 13)
        h = h * 0xC2B2AE35
        h = h ^ (h >> 16)
        t = int(round((1 - RATE) * 2**32))
        keep = h < t
        p = mx.where(keep, p * (2**32 / t), 0)
    return p @ v


def variant(name):
    def f(q, k, v, key):
        if name == "sdpa":
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=D**-0.5, mask="causal")
        else:
            drop, f32 = name.split("/")
            o = written(q, k, v, drop, f32 == "f32", key)
        return (o.astype(mx.float32) ** 2).mean()

    return mx.compile(mx.value_and_grad(f, argnums=(0, 1, 2)))


def bench(name, iters=50):
    mx.random.seed(0)
    q, k, v = (mx.random.normal((B, H, T, D)).astype(mx.bfloat16) for _ in range(3))
    step = variant(name)
    key = mx.random.key(1)
    for i in range(5):
        out = step(q, k, v, mx.random.split(key)[0])
        mx.eval(out)
    t0 = time.perf_counter()
    for i in range(iters):
        key, sub = mx.random.split(key)
        out = step(q, k, v, sub)
        mx.eval(out)
    ms = (time.perf_counter() - t0) / iters * 1e3
    print(f"{name:18s} {ms:7.3f} ms per layer fwd+bwd (x6 layers = {6 * ms:6.2f} ms/step)", flush=True)


for n in ["sdpa", "none/f32", "none/bf16", "bernoulli/f32", "bernoulli/bf16", "u16/bf16", "ubf16/bf16", "hash/bf16", "hash/f32"]:
    bench(n)
