//! The fused causal depthwise convolution's CUDA kernels (`src/causal_conv.cpp`), run on the CPU
//! under the CUDA emulation of `emulation/mod.rs`. The output and all three gradients must equal
//! MLX autodiff through the convolution written as shifted slices of the zero-padded input. The same
//! kernels run for real in the trainer's GPU test.

mod emulation;

use emulation::{
    PRELUDE, assert_close, compile_and_run, constant, kernel_source, read, values, write,
};
use mixsweep_mlx::{Array, value_and_grad};

const KERNELS: &str = include_str!("../src/causal_conv.cpp");

/// The kernels as one C++ program for `x [batch, seq, channels]`, `w [k, channels]` and time
/// segments of `seg` steps (the constants the launcher injects).
fn program(batch: usize, seq: usize, channels: usize, k: usize, seg: usize) -> String {
    let threads = constant(KERNELS, "kThreads");
    let segs = seq.div_ceil(seg);
    let constants = format!(
        "  constexpr int SEQ = {seq}; constexpr int CHANNELS = {channels}; constexpr int KSIZE = {k};\n  \
         constexpr int SEG = {seg}; constexpr int SEGS = {segs}; constexpr int THREADS = THREADS_PER_BLOCK;\n"
    );
    let parts = batch * segs;
    format!(
        "#define THREADS_PER_BLOCK {threads}\n{PRELUDE}{header}\n\
         void forward(const float* x, const float* w, const float* bias, float* y) {{\n{constants}{forward}}}\n\
         void backward(const float* x, const float* w, const float* dy, float* dx, float* dw_part,\n\
                       float* db_part) {{\n{constants}{backward}}}\n\
         int main() {{\n\
           const size_t n = {n}, parts = {parts};\n\
           auto x = load(\"x.bin\", n), w = load(\"w.bin\", {k} * {channels}), bias = load(\"bias.bin\", {channels});\n\
           auto dy = load(\"dy.bin\", n);\n\
           std::vector<float> y(n, NAN), dx(n, NAN), dwp(parts * {k} * {channels}, NAN), dbp(parts * {channels}, NAN);\n\
           launch({blocks}, [&] {{ forward(x.data(), w.data(), bias.data(), y.data()); }});\n\
           launch({blocks}, [&] {{ backward(x.data(), w.data(), dy.data(), dx.data(), dwp.data(), dbp.data()); }});\n\
           // the partial sums, added up as the C++ side does with MLX\n\
           std::vector<float> dw({k} * {channels}, 0.0f), db({channels}, 0.0f);\n\
           for (size_t p = 0; p < parts; ++p) {{\n\
             for (size_t j = 0; j < {k} * {channels}; ++j) dw[j] += dwp[p * {k} * {channels} + j];\n\
             for (size_t c = 0; c < {channels}; ++c) db[c] += dbp[p * {channels} + c];\n\
           }}\n\
           save(\"y.out\", y); save(\"dx.out\", dx); save(\"dw.out\", dw); save(\"dbias.out\", db);\n\
         }}\n",
        header = kernel_source(KERNELS, "kHeader"),
        forward = kernel_source(KERNELS, "kForward"),
        backward = kernel_source(KERNELS, "kBackward"),
        n = batch * seq * channels,
        blocks = batch * segs * channels.div_ceil(threads),
    )
}

/// Reference: the convolution as `K` shifted slices of the zero-padded input, differentiated by MLX.
fn reference(inputs: &[Array], dy: &Array) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dy = dy.clone();
    let (values, grads) = value_and_grad(
        move |v| {
            let (x, w, bias) = (&v[0], &v[1], &v[2]);
            let (k, t) = (w.dim(0), x.dim(1));
            let padded = x.pad_axis(1, k - 1, 0, 0.0)?;
            let mut y = bias.clone();
            for j in 0..k {
                let wj = w.slice_axis(0, j, j + 1)?;
                y = y.add(&padded.slice_axis(1, j, j + t)?.mul(&wj)?)?;
            }
            Ok(vec![y.mul(&dy)?.sum_all()?, y])
        },
        inputs,
        &[0, 1, 2],
    )
    .unwrap();
    (
        values[1].to_vec_f32().unwrap(),
        grads.iter().map(|g| g.to_vec_f32().unwrap()).collect(),
    )
}

#[test]
fn fused_causal_conv_kernels_match_autodiff_of_the_sliced_convolution() {
    // (batch, seq, channels, kernel, segment): a partial last segment, segments shorter than the
    // kernel, a partial channel block, kernel sizes 1 to 4.
    for (batch, seq, channels, k, seg) in [
        (2, 37, 40, 4, 8),
        (1, 9, 300, 3, 2),
        (2, 6, 5, 1, 4),
        (1, 3, 7, 4, 32),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let n = batch * seq * channels;
        let x = values(n, 21, -1.0, 1.0);
        let w = values(k * channels, 22, -1.0, 1.0);
        let bias = values(channels, 23, -1.0, 1.0);
        let dy = values(n, 24, -1.0, 1.0);
        for (name, v) in [
            ("x.bin", &x),
            ("w.bin", &w),
            ("bias.bin", &bias),
            ("dy.bin", &dy),
        ] {
            write(dir.path(), name, v);
        }
        compile_and_run(dir.path(), &program(batch, seq, channels, k, seg));

        let arr = |v: &[f32], s: &[usize]| Array::from_f32(v, s).unwrap();
        let inputs = [
            arr(&x, &[batch, seq, channels]),
            arr(&w, &[k, channels]),
            arr(&bias, &[channels]),
        ];
        let (want_y, want_grads) = reference(&inputs, &arr(&dy, &[batch, seq, channels]));
        let case = format!("batch {batch}, seq {seq}, channels {channels}, k {k}, segment {seg}");
        let wants = [
            ("y", want_y),
            ("dx", want_grads[0].clone()),
            ("dw", want_grads[1].clone()),
            ("dbias", want_grads[2].clone()),
        ];
        for (name, want) in wants {
            let got = read(dir.path(), &format!("{name}.out"));
            assert_close(name, &got, &want, 1e-5, &case);
        }
    }
}
