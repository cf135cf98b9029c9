//! Runs CUDA kernel sources on the CPU: a kernel's body (a C++ raw string in one of `src/*.cpp`)
//! is compiled as C++ with a small emulation of the CUDA built-ins the kernels use (one OS thread
//! per CUDA thread, a barrier for `__syncthreads`, warp shuffles through shared memory), so machines
//! without a GPU still check the kernels' indexing and math. Shared by the `*_kernel_emulated` tests.

use std::path::Path;
use std::process::Command;

/// The C++ raw string assigned to `const char* <name>` in `source`.
pub fn kernel_source<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source
        .find(&format!("const char* {name} = R\"("))
        .unwrap_or_else(|| panic!("{name} not found in the kernel source"));
    let body = &source[start..];
    let open = body.find("R\"(").unwrap() + 3;
    let close = body.find(")\";").unwrap();
    &body[open..close]
}

/// `constexpr int <name> = <value>;` from `source`.
pub fn constant(source: &str, name: &str) -> usize {
    let pat = format!("constexpr int {name} = ");
    let start = source.find(&pat).unwrap() + pat.len();
    source[start..]
        .split(';')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The CUDA built-ins, for a program that defines `THREADS_PER_BLOCK` first, and `launch(blocks,
/// kernel)`, which runs the blocks one after another with a thread per CUDA thread
/// (`launch_with(blocks, threads, kernel)` for another block size, up to 1024).
pub const PRELUDE: &str = r#"
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
using std::min;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct Dim3 { int x, y, z; };
thread_local Dim3 threadIdx, blockIdx, blockDim;
std::barrier<>* block_barrier;
float shuffle_buffer[1024];
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
template <class F> static void launch_with(int blocks, int per_block, F kernel) {
  for (int b = 0; b < blocks; ++b) {
    std::barrier<> barrier(per_block);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (int t = 0; t < per_block; ++t) {
      threads.emplace_back([&, t, b] {
        threadIdx = {t, 0, 0};
        blockIdx = {b, 0, 0};
        blockDim = {per_block, 1, 1};
        kernel();
      });
    }
    for (auto& t : threads) t.join();
  }
}
template <class F> static void launch(int blocks, F kernel) { launch_with(blocks, THREADS_PER_BLOCK, kernel); }
"#;

/// Deterministic values in `[lo, hi)` (xorshift).
pub fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
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

/// Writes `v` as little-endian float32 into `dir/name`.
pub fn write(dir: &Path, name: &str, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Reads `dir/name` as little-endian float32.
pub fn read(dir: &Path, name: &str) -> Vec<f32> {
    std::fs::read(dir.join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Compiles `program` (C++20, the compiler from `CXX` or `c++`) in `dir` and runs it there.
pub fn compile_and_run(dir: &Path, program: &str) {
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    std::fs::write(dir.join("emulated.cpp"), program).unwrap();
    let built = Command::new(&compiler)
        .args(["-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas"])
        .args(["emulated.cpp", "-o", "emulated"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running the C++ compiler {compiler:?}: {e}"));
    assert!(
        built.status.success(),
        "the kernels do not compile as C++:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(dir.join("emulated"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

/// Every element of `got` within `rel` of `want`'s largest magnitude.
pub fn assert_close(name: &str, got: &[f32], want: &[f32], rel: f32, case: &str) {
    assert_eq!(got.len(), want.len(), "{name}: size ({case})");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{name}[{k}] ({case}): kernel {g}, autodiff {w}"
        );
    }
}
