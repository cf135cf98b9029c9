//! The fused selective-scan CUDA kernels (`src/selective_scan.cpp`), run on the CPU under the CUDA
//! emulation of `emulation/mod.rs`. Outputs and gradients must equal MLX autodiff through the
//! step-by-step recurrence. The same kernels run for real in the trainer's GPU test.

mod emulation;

use emulation::{
    PRELUDE, assert_close, compile_and_run, constant, kernel_source, read, values, write,
};
use mixsweep_mlx::{Array, value_and_grad};

const KERNELS: &str = include_str!("../src/selective_scan.cpp");

const MAIN: &str = r#"
int main() {
  constexpr int B = E_BATCH, T = E_SEQ, I = E_INNER, N = E_STATE;
  constexpr int FWD_BLOCK = E_FORWARD / N, FG = (I + FWD_BLOCK - 1) / FWD_BLOCK;
  constexpr int BWD_BLOCK = E_BACKWARD / N, G = (I + BWD_BLOCK - 1) / BWD_BLOCK;
  constexpr int CHUNKS = (T + E_CKPT - 1) / E_CKPT;
  auto x = load("x.bin", B * T * I), delta = load("delta.bin", B * T * I), a = load("a.bin", I * N);
  auto bm = load("b.bin", B * T * N), cm = load("c.bin", B * T * N), dy = load("dy.bin", B * T * I);
  std::vector<float> y(B * T * I, NAN), ckpt(B * CHUNKS * I * N, NAN), dx(B * T * I, NAN),
      ddelta(B * T * I, NAN), da(B * I * N, NAN), db(B * T * G * N, NAN), dc(B * T * G * N, NAN);
  launch_with(B * FG, E_FORWARD, [&] { forward(x.data(), delta.data(), a.data(), bm.data(), cm.data(), y.data(), ckpt.data()); });
  launch_with(B * G, E_BACKWARD, [&] {
    backward(x.data(), delta.data(), a.data(), bm.data(), cm.data(), ckpt.data(), dy.data(),
             dx.data(), ddelta.data(), da.data(), db.data(), dc.data());
  });
  // the partial sums, added up as the C++ side does with MLX
  std::vector<float> dA(I * N, 0.0f), dB(B * T * N, 0.0f), dC(B * T * N, 0.0f);
  for (int b = 0; b < B; ++b) for (int k = 0; k < I * N; ++k) dA[k] += da[b * I * N + k];
  for (int bt = 0; bt < B * T; ++bt) for (int g = 0; g < G; ++g) for (int n = 0; n < N; ++n) {
    dB[bt * N + n] += db[(bt * G + g) * N + n];
    dC[bt * N + n] += dc[(bt * G + g) * N + n];
  }
  save("y.out", y); save("dx.out", dx); save("ddelta.out", ddelta);
  save("da.out", dA); save("db.out", dB); save("dc.out", dC);
}
"#;

/// A launch shape (`Tune` in the source): threads per block of each kernel, checkpoint interval.
#[derive(Debug, Clone, Copy)]
struct Shape {
    forward: usize,
    backward: usize,
    checkpoint: usize,
}

/// The kernels as one C++ program for these sizes (the template constants MLX would inject).
fn program(batch: usize, seq: usize, inner: usize, state: usize, chunk: usize, l: Shape) -> String {
    let constants = |threads: usize| {
        format!(
            "  constexpr int BATCH = {batch}; constexpr int SEQ = {seq}; constexpr int INNER = {inner};\n  \
             constexpr int STATE = {state}; constexpr int CKPT = E_CKPT; constexpr int CHUNK = {chunk};\n  \
             constexpr int THREADS = {threads}; (void)BATCH;\n"
        )
    };
    format!(
        "#define THREADS_PER_BLOCK {forward}\n#define E_FORWARD {forward}\n#define E_BACKWARD {backward}\n\
         #define E_CKPT {checkpoint}\n\
         #define E_BATCH {batch}\n#define E_SEQ {seq}\n#define E_INNER {inner}\n#define E_STATE {state}\n\
         {PRELUDE}{header}\n\
         void forward(const float* x, const float* delta, const float* a, const float* bm, const float* cm,\n\
                      float* y, float* checkpoints) {{\n{fc}{fwd}}}\n\
         void backward(const float* x, const float* delta, const float* a, const float* bm, const float* cm,\n\
                       const float* checkpoints, const float* dy, float* dx, float* ddelta, float* da_part,\n\
                       float* db_part, float* dc_part) {{\n{bc}{bwd}}}\n{MAIN}",
        forward = l.forward,
        backward = l.backward,
        checkpoint = l.checkpoint,
        fc = constants(l.forward),
        bc = constants(l.backward),
        header = kernel_source(KERNELS, "kHeader"),
        fwd = kernel_source(KERNELS, "kForward"),
        bwd = kernel_source(KERNELS, "kBackward"),
    )
}

/// Reference: the recurrence one step at a time in MLX ops, differentiated by MLX.
fn reference(inputs: &[Array], dy: &Array, floor: f32) -> (Vec<f32>, Vec<Vec<f32>>) {
    let dy = dy.clone();
    let (values, grads) = value_and_grad(
        move |v| {
            let (x, delta, a, b, c) = (&v[0], &v[1], &v[2], &v[3], &v[4]);
            let (bsz, seq, inner, state) = (x.dim(0), x.dim(1), x.dim(2), a.dim(1));
            let mut h = Array::zeros(&[bsz, inner, state], mixsweep_mlx::Dtype::F32)?;
            let mut ys = vec![];
            for t in 0..seq {
                let at = |m: &Array, shape: &[i32]| m.slice_axis(1, t, t + 1)?.reshape(shape);
                let (b3, i3, n3) = (bsz as i32, inner as i32, state as i32);
                let dt = at(delta, &[b3, i3, 1])?;
                let xt = at(x, &[b3, i3, 1])?;
                let decay = dt.mul(a)?.maximum_scalar(floor)?.exp()?;
                h = decay
                    .mul(&h)?
                    .add(&dt.mul(&xt)?.mul(&at(b, &[b3, 1, n3])?)?)?;
                ys.push(
                    h.mul(&at(c, &[b3, 1, n3])?)?
                        .sum(&[-1], false)?
                        .expand_dims(1)?,
                );
            }
            let refs: Vec<&Array> = ys.iter().collect();
            let y = mixsweep_mlx::concatenate(&refs, 1)?;
            Ok(vec![y.mul(&dy)?.sum_all()?, y])
        },
        inputs,
        &[0, 1, 2, 3, 4],
    )
    .unwrap();
    (
        values[1].to_vec_f32().unwrap(),
        grads.iter().map(|g| g.to_vec_f32().unwrap()).collect(),
    )
}

#[test]
fn fused_scan_kernels_match_autodiff_of_the_recurrence() {
    // (batch, seq, inner, state, chunk): a partial last checkpoint chunk and a partial channel
    // block; state sizes 16, 8 and 32; decays that hit the floor (dt up to 3, |A| up to e^2.5).
    let default = Shape {
        forward: constant(KERNELS, "kForwardThreads"),
        backward: constant(KERNELS, "kBackwardThreads"),
        checkpoint: constant(KERNELS, "kCheckpoint"),
    };
    let other = Shape {
        forward: 64,
        backward: 256,
        checkpoint: 8,
    };
    for (batch, seq, inner, state, chunk, shape) in [
        (2, 37, 40, 16, 8, default),
        (1, 16, 24, 8, 16, default),
        (1, 5, 3, 32, 4, default),
        (2, 37, 40, 16, 8, other),
        (1, 19, 3, 32, 4, other),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let x = values(batch * seq * inner, 1, -1.0, 1.0);
        let delta = values(batch * seq * inner, 2, 0.01, 3.0);
        let a: Vec<f32> = values(inner * state, 3, -1.0, 2.5)
            .iter()
            .map(|v| -v.exp())
            .collect();
        let b = values(batch * seq * state, 4, -1.0, 1.0);
        let c = values(batch * seq * state, 5, -1.0, 1.0);
        let dy = values(batch * seq * inner, 6, -1.0, 1.0);
        for (name, v) in [
            ("x.bin", &x),
            ("delta.bin", &delta),
            ("a.bin", &a),
            ("b.bin", &b),
            ("c.bin", &c),
            ("dy.bin", &dy),
        ] {
            write(dir.path(), name, v);
        }
        compile_and_run(dir.path(), &program(batch, seq, inner, state, chunk, shape));

        let arr = |v: &[f32], s: &[usize]| Array::from_f32(v, s).unwrap();
        let inputs = [
            arr(&x, &[batch, seq, inner]),
            arr(&delta, &[batch, seq, inner]),
            arr(&a, &[inner, state]),
            arr(&b, &[batch, seq, state]),
            arr(&c, &[batch, seq, state]),
        ];
        let floor = -64.0 / chunk as f32;
        let (want_y, want_grads) = reference(&inputs, &arr(&dy, &[batch, seq, inner]), floor);
        let wants = [
            ("y", want_y),
            ("dx", want_grads[0].clone()),
            ("ddelta", want_grads[1].clone()),
            ("da", want_grads[2].clone()),
            ("db", want_grads[3].clone()),
            ("dc", want_grads[4].clone()),
        ];
        let case = format!("batch {batch}, seq {seq}, inner {inner}, state {state}, {shape:?}");
        for (name, want) in wants {
            let got = read(dir.path(), &format!("{name}.out"));
            assert_close(name, &got, &want, 1e-4, &case);
        }
    }
}
