//! Device selection: MLX runs on the GPU (Metal or CUDA) when the loaded libmlx has one, else on the CPU.

use crate::{Result, check, ffi};

/// Where MLX computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        })
    }
}

/// Whether the loaded libmlx has a usable GPU backend.
pub fn gpu_available() -> Result<bool> {
    let mut out = 0;
    check(unsafe { ffi::msx_gpu_available(&mut out) })?;
    Ok(out != 0)
}

pub fn set_default(device: Device) -> Result<()> {
    check(unsafe { ffi::msx_set_default_device((device == Device::Gpu) as i32) })
}

pub fn default() -> Result<Device> {
    let mut gpu = 0;
    check(unsafe { ffi::msx_default_device(&mut gpu) })?;
    Ok(if gpu != 0 { Device::Gpu } else { Device::Cpu })
}

/// Picks the GPU when available, unless `requested` forces one. Returns the device in use.
/// Asking for the GPU where there is none is an error.
pub fn select(requested: Option<Device>) -> Result<Device> {
    let device = match requested {
        Some(d) => d,
        None if gpu_available()? => Device::Gpu,
        None => Device::Cpu,
    };
    if device == Device::Gpu && !gpu_available()? {
        return Err(crate::Error::new(
            "the GPU was requested but this libmlx has no GPU backend (install mlx-cuda-13 on NVIDIA or mlx on macOS)",
        ));
    }
    set_default(device)?;
    Ok(device)
}

/// Blocks `signals` on the worker thread of MLX's CPU stream, which MLX starts while the library
/// loads: a process that takes its stop signals with `sigwait` must block them in every thread
/// (threads started later inherit the mask of the thread that starts them).
pub fn block_signals_on_cpu_stream(signals: &[i32]) -> Result<()> {
    check(unsafe { ffi::msx_block_signals_on_cpu_stream(signals.as_ptr(), signals.len()) })
}
