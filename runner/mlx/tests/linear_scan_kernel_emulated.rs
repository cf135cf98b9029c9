//! The fused diagonal linear recurrence's CUDA kernels (`src/linear_scan.cpp`), run on the CPU under
//! the CUDA emulation of `emulation/mod.rs`. The states and both gradients must equal MLX autodiff
//! through the step-by-step recurrence. The same kernels run for real in the trainer's GPU test.

mod emulation;

use emulation::{
    PRELUDE, assert_close, compile_and_run, constant, kernel_source, read, values, write,
};
use mixsweep_mlx::{Array, value_and_grad};

const KERNELS: &str = include_str!("../src/linear_scan.cpp");

/// The kernels as one C++ program for `[batch, seq, channels]` (the constants MLX would inject).
fn program(batch: usize, seq: usize, channels: usize, chunk: usize) -> String {
    let threads = constant(KERNELS, "kThreads");
    let total = batch * channels;
    let constants = format!(
        "  constexpr int SEQ = {seq}; constexpr int CHANNELS = {channels}; constexpr int CHUNK = {chunk};\n  \
         constexpr int TOTAL = {total};\n"
    );
    format!(
        "#define THREADS_PER_BLOCK {threads}\n{PRELUDE}{header}\n\
         void forward(const float* log_a, const float* u, float* out) {{\n{constants}{forward}}}\n\
         void backward(const float* log_a, const float* h, const float* dh, float* dlog_a, float* du) {{\n\
         {constants}{backward}}}\n\
         int main() {{\n\
           const size_t n = {n};\n\
           auto log_a = load(\"log_a.bin\", n), u = load(\"u.bin\", n), dh = load(\"dh.bin\", n);\n\
           std::vector<float> h(n, NAN), dla(n, NAN), du(n, NAN);\n\
           launch({blocks}, [&] {{ forward(log_a.data(), u.data(), h.data()); }});\n\
           launch({blocks}, [&] {{ backward(log_a.data(), h.data(), dh.data(), dla.data(), du.data()); }});\n\
           save(\"h.out\", h); save(\"dlog_a.out\", dla); save(\"du.out\", du);\n\
         }}\n",
        header = kernel_source(KERNELS, "kHeader"),
        forward = kernel_source(KERNELS, "kForward"),
        backward = kernel_source(KERNELS, "kBackward"),
        n = batch * seq * channels,
        blocks = total.div_ceil(threads),
    )
}

/// Reference: `h_t = e^{max(log_a_t, floor)} h_{t−1} + u_t` one step at a time in MLX ops,
/// differentiated by MLX. Returns every `h` and the gradients of `Σ h ⊙ dh` in log_a and u.
fn reference(inputs: &[Array], dh: &Array, floor: f32) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dh = dh.clone();
    let (values, grads) = value_and_grad(
        move |x| {
            let (log_a, u) = (&x[0], &x[1]);
            let (b, t, c) = (u.dim(0), u.dim(1), u.dim(2));
            let mut h = Array::zeros(&[b, 1, c], mixsweep_mlx::Dtype::F32)?;
            let mut hs = vec![];
            for step in 0..t {
                let at = |m: &Array| m.slice_axis(1, step, step + 1);
                let e = at(log_a)?.maximum_scalar(floor)?.exp()?;
                h = e.mul(&h)?.add(&at(u)?)?;
                hs.push(h.clone());
            }
            let refs: Vec<&Array> = hs.iter().collect();
            let all = mixsweep_mlx::concatenate(&refs, 1)?;
            Ok(vec![all.mul(&dh)?.sum_all()?, all])
        },
        inputs,
        &[0, 1],
    )
    .unwrap();
    (
        values[1].to_vec_f32().unwrap(),
        grads.iter().map(|g| g.to_vec_f32().unwrap()).collect(),
    )
}

#[test]
fn fused_linear_scan_kernels_match_autodiff_of_the_recurrence() {
    // (batch, seq, channels, chunk): a partial last block of threads (3·100 = 300 of 512), log-decays
    // below the floor (down to −6 against floors −4 and −2), and a one-step sequence.
    for (batch, seq, channels, chunk) in [(3, 29, 100, 16), (1, 7, 5, 32), (2, 1, 3, 8)] {
        let dir = tempfile::tempdir().unwrap();
        let n = batch * seq * channels;
        let log_a = values(n, 41, -6.0, 0.0);
        let u = values(n, 42, -1.0, 1.0);
        let dh = values(n, 43, -1.0, 1.0);
        for (name, x) in [("log_a.bin", &log_a), ("u.bin", &u), ("dh.bin", &dh)] {
            write(dir.path(), name, x);
        }
        compile_and_run(dir.path(), &program(batch, seq, channels, chunk));

        let arr = |x: &[f32]| Array::from_f32(x, &[batch, seq, channels]).unwrap();
        let floor = -64.0 / chunk as f32;
        let (want_h, want) = reference(&[arr(&log_a), arr(&u)], &arr(&dh), floor);
        let case = format!("batch {batch}, seq {seq}, channels {channels}, chunk {chunk}");
        assert_close("h", &read(dir.path(), "h.out"), &want_h, 1e-5, &case);
        assert_close(
            "dlog_a",
            &read(dir.path(), "dlog_a.out"),
            &want[0],
            1e-5,
            &case,
        );
        assert_close("du", &read(dir.path(), "du.out"), &want[1], 1e-5, &case);
    }
}
