"""Times forward and forward+backward of ../shared/bench/gpt_mlx.py's model (compiled), to compare
with `cargo run --example bench_parts`. Usage: python3 py_parts.py PATH/TO/gpt_mlx.py [bf16]"""
import sys, time
path = sys.argv[1]
sys.argv = ["gpt_mlx.py"] + sys.argv[2:]
src = open(path).read().split("if compiled:")[0]
exec(src)
fwd = mx.compile(lambda x, y: loss_fn(model, x, y), inputs=[model.state])
vg = nn.value_and_grad(model, loss_fn)
fb = mx.compile(lambda x, y: vg(model, x, y), inputs=[model.state])
data = mx.random.randint(0, V, (B, T + 1))
x, y = data[:, :-1], data[:, 1:]
def bench(name, f):
    for _ in range(3): mx.eval(f(x, y))
    t0 = time.perf_counter()
    for _ in range(30): mx.eval(f(x, y))
    dt = (time.perf_counter() - t0) / 30
    print(f"{name:>28} python {dtype}: {dt*1e3:8.2f} ms  {B*T/dt:12.0f} tok/s")
bench("forward", fwd)
bench("forward+backward", fb)
