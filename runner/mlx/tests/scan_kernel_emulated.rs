//! The fused selective-scan CUDA kernels (`src/selective_scan.cpp`), run on the CPU: their source is
//! compiled as C++ with a small emulation of the CUDA built-ins they use (one OS thread per CUDA
//! thread, a barrier for `__syncthreads`, warp shuffles through shared memory), so machines without
//! a GPU still check the kernels' indexing and math. Outputs and gradients must equal MLX autodiff
//! through the step-by-step recurrence. The same kernels run for real in the trainer's GPU test.

use mixsweep_mlx::{Array, value_and_grad};
use std::path::Path;
use std::process::Command;

const KERNELS: &str = include_str!("../src/selective_scan.cpp");

/// The C++ raw string assigned to `const char* <name>`.
fn kernel_source(name: &str) -> &'static str {
    let start = KERNELS
        .find(&format!("const char* {name} = R\"("))
        .unwrap_or_else(|| panic!("{name} not found in selective_scan.cpp"));
    let body = &KERNELS[start..];
    let open = body.find("R\"(").unwrap() + 3;
    let close = body.find(")\";").unwrap();
    &body[open..close]
}

const PRELUDE: &str = r#"
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <thread>
#include <vector>
using std::min;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct Dim3 { int x, y, z; };
thread_local Dim3 threadIdx, blockIdx;
std::barrier<>* block_barrier;
float shuffle_buffer[THREADS_PER_BLOCK];
void __syncthreads() { block_barrier->arrive_and_wait(); }
// Every thread of the block reaches each shuffle (the kernels' control flow is uniform).
float __shfl_xor_sync(unsigned, float v, int offset, int) {
  const int t = threadIdx.x;
  shuffle_buffer[t] = v;
  block_barrier->arrive_and_wait();
  const float r = shuffle_buffer[t ^ offset];
  block_barrier->arrive_and_wait();
  return r;
}
"#;

const MAIN: &str = r#"
static std::vector<float> load(const char* f, size_t n) {
  std::vector<float> v(n);
  FILE* p = fopen(f, "rb");
  if (!p || fread(v.data(), 4, n, p) != n) { fprintf(stderr, "cannot read %s\n", f); std::exit(1); }
  fclose(p);
  return v;
}
static void save(const char* f, const std::vector<float>& v) {
  FILE* p = fopen(f, "wb");
  fwrite(v.data(), 4, v.size(), p);
  fclose(p);
}
template <class F> static void launch(int blocks, F kernel) {
  for (int b = 0; b < blocks; ++b) {
    std::barrier<> barrier(THREADS_PER_BLOCK);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (int t = 0; t < THREADS_PER_BLOCK; ++t) {
      threads.emplace_back([&, t, b] { threadIdx = {t, 0, 0}; blockIdx = {b, 0, 0}; kernel(); });
    }
    for (auto& t : threads) t.join();
  }
}
int main() {
  constexpr int B = E_BATCH, T = E_SEQ, I = E_INNER, N = E_STATE;
  constexpr int PER_BLOCK = THREADS_PER_BLOCK / N, G = (I + PER_BLOCK - 1) / PER_BLOCK;
  constexpr int CHUNKS = (T + E_CKPT - 1) / E_CKPT;
  auto x = load("x.bin", B * T * I), delta = load("delta.bin", B * T * I), a = load("a.bin", I * N);
  auto bm = load("b.bin", B * T * N), cm = load("c.bin", B * T * N), dy = load("dy.bin", B * T * I);
  std::vector<float> y(B * T * I, NAN), ckpt(B * CHUNKS * I * N, NAN), dx(B * T * I, NAN),
      ddelta(B * T * I, NAN), da(B * I * N, NAN), db(B * T * G * N, NAN), dc(B * T * G * N, NAN);
  launch(B * G, [&] { forward(x.data(), delta.data(), a.data(), bm.data(), cm.data(), y.data(), ckpt.data()); });
  launch(B * G, [&] {
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

/// The kernels as one C++ program for these sizes (the template constants MLX would inject).
fn program(batch: usize, seq: usize, inner: usize, state: usize, chunk: usize) -> String {
    let constants = format!(
        "  constexpr int BATCH = {batch}; constexpr int SEQ = {seq}; constexpr int INNER = {inner};\n  \
         constexpr int STATE = {state}; constexpr int CKPT = E_CKPT; constexpr int CHUNK = {chunk};\n  \
         constexpr int THREADS = THREADS_PER_BLOCK; (void)BATCH;\n"
    );
    let threads = extract_constant("kThreads");
    let checkpoint = extract_constant("kCheckpoint");
    format!(
        "#define THREADS_PER_BLOCK {threads}\n#define E_CKPT {checkpoint}\n\
         #define E_BATCH {batch}\n#define E_SEQ {seq}\n#define E_INNER {inner}\n#define E_STATE {state}\n\
         {PRELUDE}{header}\n\
         void forward(const float* x, const float* delta, const float* a, const float* bm, const float* cm,\n\
                      float* y, float* checkpoints) {{\n{constants}{forward}}}\n\
         void backward(const float* x, const float* delta, const float* a, const float* bm, const float* cm,\n\
                       const float* checkpoints, const float* dy, float* dx, float* ddelta, float* da_part,\n\
                       float* db_part, float* dc_part) {{\n{constants}{backward}}}\n{MAIN}",
        header = kernel_source("kHeader"),
        forward = kernel_source("kForward"),
        backward = kernel_source("kBackward"),
    )
}

/// `constexpr int <name> = <value>;` from selective_scan.cpp.
fn extract_constant(name: &str) -> String {
    let pat = format!("constexpr int {name} = ");
    let start = KERNELS.find(&pat).unwrap() + pat.len();
    KERNELS[start..]
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string()
}

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn write(dir: &Path, name: &str, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn read(dir: &Path, name: &str) -> Vec<f32> {
    std::fs::read(dir.join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
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
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    // (batch, seq, inner, state, chunk): a partial last checkpoint chunk and a partial channel
    // block; state sizes 16, 8 and 32; decays that hit the floor (dt up to 3, |A| up to e^2.5).
    for (batch, seq, inner, state, chunk) in
        [(2, 37, 40, 16, 8), (1, 16, 24, 8, 16), (1, 5, 3, 32, 4)]
    {
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
        std::fs::write(
            dir.path().join("emulated.cpp"),
            program(batch, seq, inner, state, chunk),
        )
        .unwrap();
        let built = Command::new(&compiler)
            .args(["-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas"])
            .args(["emulated.cpp", "-o", "emulated"])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running the C++ compiler {compiler:?}: {e}"));
        assert!(
            built.status.success(),
            "the kernels do not compile as C++:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let ran = Command::new(dir.path().join("emulated"))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );

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
        for (name, want) in wants {
            let got = read(dir.path(), &format!("{name}.out"));
            assert_eq!(got.len(), want.len(), "{name}: size");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * scale,
                    "{name}[{k}] (batch {batch}, seq {seq}, inner {inner}, state {state}): \
                     kernel {g}, autodiff {w}"
                );
            }
        }
    }
}
