// Host-side helpers shared by the custom-kernel files (selective_scan.cpp, matrix_scans.cpp,
// linear_scan.cpp): float32 inputs for the kernels, and the C entry points' error reporting.
#pragma once

#include <exception>
#include <vector>

#include "mlx/ops.h"

extern "C" void msx_set_error(const char* msg);

namespace mixsweep_kernels {

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

}  // namespace mixsweep_kernels
