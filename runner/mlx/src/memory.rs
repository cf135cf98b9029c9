//! Allocator statistics and limits (bytes).

use crate::{Result, check, ffi};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub active: usize,
    pub peak: usize,
    pub cache: usize,
}

pub fn stats() -> Result<MemoryStats> {
    let mut s = MemoryStats::default();
    check(unsafe { ffi::msx_memory_stats(&mut s.active, &mut s.peak, &mut s.cache) })?;
    Ok(s)
}

pub fn reset_peak() -> Result<()> {
    check(unsafe { ffi::msx_reset_peak_memory() })
}

/// Sets the memory limit; returns the previous one.
pub fn set_memory_limit(bytes: usize) -> Result<usize> {
    let mut prev = 0;
    check(unsafe { ffi::msx_set_memory_limit(bytes, &mut prev) })?;
    Ok(prev)
}

/// Sets the buffer-cache limit; returns the previous one.
pub fn set_cache_limit(bytes: usize) -> Result<usize> {
    let mut prev = 0;
    check(unsafe { ffi::msx_set_cache_limit(bytes, &mut prev) })?;
    Ok(prev)
}

pub fn clear_cache() -> Result<()> {
    check(unsafe { ffi::msx_clear_cache() })
}
