// Host-side helpers shared by the custom-kernel files (selective_scan.cpp, matrix_scans.cpp,
// linear_scan.cpp, mamba3_scan.cpp): the kernel launcher (custom_kernel.cpp), float32 inputs for
// the kernels, and the C entry points' error reporting.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "mlx/fast.h"
#include "mlx/ops.h"
#include "mlx/transforms.h"

extern "C" void msx_set_error(const char* msg);

namespace mixsweep_kernels {

using TemplateArgs = std::vector<std::pair<std::string, mlx::core::fast::TemplateArg>>;

// A custom CUDA kernel with float32 inputs and outputs (row-contiguous), its integer template
// constants injected as `constexpr int` at the top of `source`: compiled once per machine and kept
// in the kernel cache (custom_kernel.cpp), or by MLX's per-process JIT as a fallback.
class Kernel {
 public:
  Kernel(std::string name, std::vector<std::string> inputs, std::vector<std::string> outputs,
         const char* source, const char* header);

  // Launches `threads`-thread blocks over `grid` threads in all.
  std::vector<mlx::core::array> operator()(const std::vector<mlx::core::array>& inputs,
                                           const std::vector<mlx::core::Shape>& output_shapes,
                                           std::tuple<int, int, int> grid, int threads,
                                           const TemplateArgs& args) const;

 private:
  // The whole CUDA program for entry point `entry` with these constants.
  std::string program(const std::string& entry, const TemplateArgs& args) const;

  std::string name_;
  std::vector<std::string> inputs_;
  std::vector<std::string> outputs_;
  std::string source_;
  std::string header_;
  mlx::core::fast::CustomKernelFunction jit_;
};

// Every input cast to float32 (the kernels read and write float32).
inline std::vector<mlx::core::array> as_f32(const std::vector<mlx::core::array>& in) {
  std::vector<mlx::core::array> out;
  for (const auto& a : in) out.push_back(mlx::core::astype(a, mlx::core::float32));
  return out;
}

// Runs `body`, reporting any exception through msx_set_error: 0 on success, 1 on failure.
template <class F>
int guarded(F body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    msx_set_error(e.what());
    return 1;
  } catch (...) {
    msx_set_error("unknown C++ exception");
    return 1;
  }
}

// The body of a fused scan's C entry point: checks `chunk`, joins `forward(primals, chunk)` and
// `backward(primals, cotangents, outputs, chunk)` with custom_vjp (so the kernel pair traces into
// `compile` like any op), applies it to `primals` and returns its first output in `out`.
template <class Forward, class Backward>
int differentiable(const char* what, int chunk, Forward forward, Backward backward,
                   const std::vector<mlx::core::array>& primals, mlx::core::array** out) {
  using Arrays = std::vector<mlx::core::array>;
  return guarded([&] {
    if (chunk < 1) throw std::invalid_argument(std::string(what) + ": chunk must be >= 1");
    auto fun = mlx::core::custom_vjp(
        [=](const Arrays& p) { return forward(p, chunk); },
        [=](const Arrays& p, const Arrays& cotangents, const Arrays& outputs) {
          return backward(p, cotangents, outputs, chunk);
        });
    *out = new mlx::core::array(fun(primals)[0]);
  });
}

}  // namespace mixsweep_kernels
