// Custom CUDA kernels compiled once per machine instead of once per process.
//
// MLX 0.32's `fast::cuda_kernel` NVRTC-compiles a custom kernel in every process (its JIT module is
// built without the disk cache), which costs seconds of every recurrent model's start-up. A `Kernel`
// compiles the same source itself with NVRTC (the library libmlx already loads), for the device's
// architecture, keeps the binary in MLX's kernel cache folder (`MLX_PTX_CACHE_DIR`, default
// `$TMPDIR/mlx-mixsweep`) as a unit the runner's shared kernel cache publishes like MLX's own
// (`mixsweep/<entry>.txt`, then `.ptx` holding the CUBIN), and launches it with
// `fast::precompiled_cuda_kernel`. The next process loads the binary (milliseconds). Any failure
// (no NVRTC, a compile error, an unwritable folder) falls back to `fast::cuda_kernel` with a warning
// once, as does `MIXSWEEP_KERNEL_JIT=mlx` (to compare).

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernel_util.h"
#include "mlx/fast.h"

namespace mx = mlx::core;
namespace fs = std::filesystem;

namespace mixsweep_kernels {

namespace {

// "sm_<major><minor>" of device 0 from the CUDA driver that libmlx loaded (resolved with dlsym, so
// CPU and Metal builds link without it), without initialising MLX; "" without a driver or GPU.
// (CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR = 75/76; cuInit is idempotent.)
std::string driver_arch() {
  using Init = int (*)(unsigned);
  using DeviceGet = int (*)(int*, int);
  using Attribute = int (*)(int*, int, int);
  auto init = reinterpret_cast<Init>(dlsym(RTLD_DEFAULT, "cuInit"));
  auto device_get = reinterpret_cast<DeviceGet>(dlsym(RTLD_DEFAULT, "cuDeviceGet"));
  auto attribute = reinterpret_cast<Attribute>(dlsym(RTLD_DEFAULT, "cuDeviceGetAttribute"));
  int dev = 0, major = 0, minor = 0;
  if (!init || !device_get || !attribute || init(0) != 0 || device_get(&dev, 0) != 0 ||
      attribute(&major, 75, dev) != 0 || attribute(&minor, 76, dev) != 0) {
    return "";
  }
  return "sm_" + std::to_string(major) + std::to_string(minor);
}

// The few NVRTC and driver entry points used, resolved from the libraries libmlx loaded (absent
// from the CPU and Metal builds).
struct Nvrtc {
  using Program = void*;
  int (*create)(Program*, const char*, const char*, int, const char* const*, const char* const*);
  int (*compile)(Program, int, const char* const*);
  int (*cubin_size)(Program, size_t*);
  int (*cubin)(Program, char*);
  int (*log_size)(Program, size_t*);
  int (*log)(Program, char*);
  int (*destroy)(Program*);

  static const Nvrtc* get() {
    static const Nvrtc* api = []() -> const Nvrtc* {
      static Nvrtc n{};
      auto sym = [](const char* name) { return dlsym(RTLD_DEFAULT, name); };
      n.create = reinterpret_cast<decltype(n.create)>(sym("nvrtcCreateProgram"));
      n.compile = reinterpret_cast<decltype(n.compile)>(sym("nvrtcCompileProgram"));
      n.cubin_size = reinterpret_cast<decltype(n.cubin_size)>(sym("nvrtcGetCUBINSize"));
      n.cubin = reinterpret_cast<decltype(n.cubin)>(sym("nvrtcGetCUBIN"));
      n.log_size = reinterpret_cast<decltype(n.log_size)>(sym("nvrtcGetProgramLogSize"));
      n.log = reinterpret_cast<decltype(n.log)>(sym("nvrtcGetProgramLog"));
      n.destroy = reinterpret_cast<decltype(n.destroy)>(sym("nvrtcDestroyProgram"));
      const bool all = n.create && n.compile && n.cubin_size && n.cubin && n.log_size && n.log &&
                       n.destroy;
      return all ? &n : nullptr;
    }();
    return api;
  }

  // "sm_<major><minor>" of device 0.
  std::string arch() const {
    std::string a = driver_arch();
    if (a.empty()) throw std::runtime_error("cannot read the GPU's compute capability");
    return a;
  }

  // The CUBIN of `source` for `arch`, or an error with NVRTC's log.
  std::string build(const std::string& source, const std::string& entry,
                    const std::string& arch) const {
    Program prog = nullptr;
    if (create(&prog, source.c_str(), (entry + ".cu").c_str(), 0, nullptr, nullptr) != 0) {
      throw std::runtime_error("nvrtcCreateProgram failed");
    }
    const std::string gpu = "--gpu-architecture=" + arch;
    const char* options[] = {gpu.c_str()};
    const int status = compile(prog, 1, options);
    std::string out;
    if (status != 0) {
      size_t n = 0;
      log_size(prog, &n);
      std::string text(n, '\0');
      log(prog, text.data());
      destroy(&prog);
      throw std::runtime_error("NVRTC could not compile " + entry + ": " + text);
    }
    size_t n = 0;
    bool got = cubin_size(prog, &n) == 0 && n > 0;
    if (got) {
      out.resize(n);
      got = cubin(prog, out.data()) == 0;
    }
    destroy(&prog);
    if (!got) throw std::runtime_error("NVRTC compiled " + entry + " but gave no CUBIN");
    return out;
  }
};

std::atomic<bool> precompiled_off{false};

bool use_precompiled() {
  static const bool wanted = [] {
    const char* v = std::getenv("MIXSWEEP_KERNEL_JIT");
    return !(v && std::string(v) == "mlx");
  }();
  return wanted && !precompiled_off.load() && Nvrtc::get() != nullptr;
}

fs::path cache_dir() {
  if (const char* d = std::getenv("MLX_PTX_CACHE_DIR"); d && *d) return fs::path(d) / "mixsweep";
  return fs::temp_directory_path() / "mlx-mixsweep";
}

// Writes `data` to `path` under a temporary name, then renames it (readers see all or nothing).
void write_atomically(const fs::path& path, const std::string& data) {
  fs::create_directories(path.parent_path());
  const fs::path tmp = path.parent_path() /
                       (".partial-" + path.filename().string() + "." + std::to_string(getpid()));
  {
    std::ofstream f(tmp, std::ios::binary);
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!f.good()) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

// Whether `bin` is a whole 64-bit ELF image (a CUBIN): its section and program header tables and
// every section's and segment's bytes lie inside it. A cut-short file in a shared cache would
// otherwise fail every later launch.
bool whole_elf(const std::string& bin) {
  if (bin.size() < 64 || bin.compare(0, 4, "\x7f" "ELF") != 0 || bin[4] != 2) return false;
  const uint64_t size = bin.size();
  auto read = [&](uint64_t at, auto zero) {
    decltype(zero) v = zero;
    if (at <= size && sizeof v <= size - at) std::memcpy(&v, bin.data() + at, sizeof v);
    return v;
  };
  auto inside = [&](uint64_t offset, uint64_t length) {
    return offset <= size && length <= size - offset;
  };
  // table offset, entry size and count at these header offsets; each entry's (offset, size) fields
  struct Table { uint64_t at, entsize_at, count_at, offset_field, size_field; };
  for (const Table t : {Table{0x28, 0x3A, 0x3C, 0x18, 0x20}, Table{0x20, 0x36, 0x38, 0x08, 0x20}}) {
    const uint64_t table = read(t.at, uint64_t{0});
    const uint64_t entsize = read(t.entsize_at, uint16_t{0});
    const uint64_t count = read(t.count_at, uint16_t{0});
    if (!inside(table, entsize * count)) return false;
    const bool sections = t.at == 0x28;
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t entry = table + i * entsize;
      if (sections && read(entry + 4, uint32_t{0}) == 8) continue;  // SHT_NOBITS: no file bytes
      if (!inside(read(entry + t.offset_field, uint64_t{0}), read(entry + t.size_field, uint64_t{0})))
        return false;
    }
  }
  return true;
}

// The binary of `source` (entry point `entry`): from this process's memory, the cache folder, or
// NVRTC (then saved to the folder).
const std::string& binary(const std::string& source, const std::string& entry) {
  static std::mutex lock;
  static std::unordered_map<std::string, std::string> loaded;
  std::lock_guard<std::mutex> guard(lock);
  const Nvrtc& nvrtc = *Nvrtc::get();
  const std::string arch = nvrtc.arch();
  std::ostringstream key;
  key << entry << "-" << arch << "-" << std::hex << std::hash<std::string>{}(source);
  if (auto it = loaded.find(key.str()); it != loaded.end()) return it->second;
  const fs::path ptx = cache_dir() / (key.str() + ".ptx");
  std::string bin;
  if (std::ifstream f(ptx, std::ios::binary); f.good()) {
    bin.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  if (!bin.empty() && !whole_elf(bin)) {
    std::fprintf(stderr, "warning: %s is not a whole kernel binary; compiling it again\n",
                 ptx.c_str());
    bin.clear();
  }
  if (bin.empty()) {
    bin = nvrtc.build(source, entry, arch);
    // as MLX's units: the kernel list first, the binary (what readers look for) last. A cache that
    // cannot be written costs the next process a compile, not this one its binary.
    try {
      write_atomically(fs::path(ptx).replace_extension(".txt"), entry + "\t" + entry + "\n");
      write_atomically(ptx, bin);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: kernel cache not written (%s)\n", e.what());
    }
  }
  return loaded.emplace(key.str(), std::move(bin)).first->second;
}

}  // namespace

Kernel::Kernel(std::string name, std::vector<std::string> inputs, std::vector<std::string> outputs,
               const char* source, const char* header)
    : name_(std::move(name)),
      inputs_(std::move(inputs)),
      outputs_(std::move(outputs)),
      source_(source),
      header_(header),
      jit_(mx::fast::cuda_kernel(name_, inputs_, outputs_, source_, header_)) {}

std::string Kernel::program(const std::string& entry, const TemplateArgs& args) const {
  std::string s = header_;
  s += "\nextern \"C\" __global__ void " + entry + "(\n";
  // __restrict__: outputs never alias inputs (MLX allocates them), so loads may move above stores
  for (const auto& in : inputs_) s += "    const float* __restrict__ " + in + ",\n";
  for (size_t i = 0; i < outputs_.size(); ++i) {
    s += "    float* __restrict__ " + outputs_[i] + (i + 1 < outputs_.size() ? ",\n" : ") {\n");
  }
  for (const auto& [name, value] : args) {
    s += "  constexpr int " + name + " = " + std::to_string(std::get<int>(value)) + ";\n";
  }
  return s + source_ + "\n}\n";
}

std::vector<mx::array> Kernel::operator()(const std::vector<mx::array>& inputs,
                                          const std::vector<mx::Shape>& output_shapes,
                                          std::tuple<int, int, int> grid, int threads,
                                          const TemplateArgs& args) const {
  const std::vector<mx::Dtype> dtypes(output_shapes.size(), mx::float32);
  if (use_precompiled()) {
    try {
      std::string entry = name_;  // a C identifier: the constants' values, '-' as 'n'
      for (const auto& [_, value] : args) entry += "_" + std::to_string(std::get<int>(value));
      std::replace(entry.begin(), entry.end(), '-', 'n');
      const std::string& bin = binary(program(entry, args), entry);
      return mx::fast::precompiled_cuda_kernel(entry, bin, inputs, output_shapes, dtypes, {}, grid,
                                               {threads, 1, 1}, 0, std::nullopt, true);
    } catch (const std::exception& e) {
      precompiled_off.store(true);
      std::fprintf(stderr, "warning: custom CUDA kernels fall back to MLX's per-process JIT (%s)\n",
                   e.what());
    }
  }
  return jit_(inputs, output_shapes, dtypes, grid, {threads, 1, 1}, args, std::nullopt, false, {});
}

}  // namespace mixsweep_kernels

extern "C" {

// 1 when custom kernels launch from this machine's compiled binaries (not MLX's per-process JIT):
// NVRTC and the driver were found, no compile has failed, and MIXSWEEP_KERNEL_JIT is not "mlx".
int msx_kernels_precompiled() { return mixsweep_kernels::use_precompiled() ? 1 : 0; }

// 1 when the `len` bytes at `data` are a whole ELF image (the check a cached CUBIN passes).
int msx_is_whole_elf(const char* data, size_t len) {
  return mixsweep_kernels::whole_elf(std::string(data, len)) ? 1 : 0;
}

// The first GPU's compute capability ("sm_90") into `buf`, NUL-terminated, before MLX starts: 1 on
// success, 0 without a CUDA driver or GPU. The kernel store keys compiled kernels by it.
int msx_gpu_arch(char* buf, size_t len) {
  const std::string arch = mixsweep_kernels::driver_arch();
  if (arch.empty() || arch.size() + 1 > len) return 0;
  std::memcpy(buf, arch.c_str(), arch.size() + 1);
  return 1;
}

}  // extern "C"
