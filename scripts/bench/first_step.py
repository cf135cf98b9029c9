# Start-up reference for issue 14: how long MLX itself (from Python) takes from process start to the end
# of the first and second compiled AdamW training steps of a small causal transformer, the same shape as
# examples/tiny.json (d=64, 2 blocks, 4 heads, T=64, 16 sequences, byte vocabulary) unless SIZE=gqa
# (d=384, 6 blocks, 6 heads, T=256, 64 sequences). Run it twice with the same MLX_PTX_CACHE_DIR: the
# second run is the warm-kernel figure to hold `mixsweep-runner`'s start-up against.
import time
t_start = time.perf_counter()
import math, os, sys
import mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim
t_import = time.perf_counter()

small = os.environ.get("SIZE", "tiny") == "tiny"
V, T, B, L, H, D = (256, 64, 16, 2, 4, 64) if small else (256, 256, 64, 6, 6, 384)
ATTN = os.environ.get("ATTN", "sdpa")

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(D), nn.RMSNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D, bias=False)
        self.w1, self.w2 = nn.Linear(D, 2 * D, bias=False), nn.Linear(2 * D, D, bias=False)
        self.rope = nn.RoPE(D // H)

    def __call__(self, x):
        b, t, _ = x.shape
        heads = [a.reshape(b, t, H, D // H).transpose(0, 2, 1, 3) for a in mx.split(self.qkv(self.n1(x)), 3, -1)]
        q, k, v = self.rope(mx.contiguous(heads[0])), self.rope(mx.contiguous(heads[1])), heads[2]
        if ATTN == "sdpa":
            a = mx.fast.scaled_dot_product_attention(q, k, v, scale=(D // H) ** -0.5, mask="causal")
        else:
            s = (q @ k.transpose(0, 1, 3, 2)) * (1 / math.sqrt(D // H))
            a = mx.softmax(s + mx.triu(mx.full((t, t), -1e9, s.dtype), k=1), axis=-1) @ v
        x = x + self.proj(a.transpose(0, 2, 1, 3).reshape(b, t, D))
        return x + self.w2(nn.silu(self.w1(self.n2(x))))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.blocks, self.norm = nn.Embedding(V, D), [Block() for _ in range(L)], nn.RMSNorm(D)

    def __call__(self, x):
        h = self.emb(x).astype(mx.bfloat16)
        for blk in self.blocks:
            h = blk(h)
        return self.emb.as_linear(self.norm(h)).astype(mx.float32)

model = Model()
model.set_dtype(mx.bfloat16)
opt = optim.AdamW(learning_rate=1e-3)
mx.eval(model.parameters())
t_init = time.perf_counter()
state = [model.state, opt.state]

def loss_fn(m, x, y):
    return nn.losses.cross_entropy(m(x), y, reduction="mean")

def step(x, y):
    loss, g = nn.value_and_grad(model, loss_fn)(model, x, y)
    opt.update(model, g)
    return loss

step = mx.compile(step, inputs=state, outputs=state)
data = mx.random.randint(0, V, (B, T + 1))
x, y = data[:, :-1], data[:, 1:]
marks = []
for _ in range(3):
    loss = step(x, y)
    mx.eval(loss, state)
    marks.append(time.perf_counter())
print(
    f"first_step.py size={'tiny' if small else 'gqa'} attn={ATTN}: import {t_import - t_start:.2f} s, "
    f"init {t_init - t_import:.2f} s, step 0 {marks[0] - t_init:.2f} s, step 1 {marks[1] - marks[0]:.3f} s, "
    f"process start -> step 1 done {marks[1] - t_start:.2f} s (loss {loss.item():.3f})"
)
