//! Is a CUDA device usable here? Checked without touching anything that panics when libcuda is
//! missing (cudarc's `CudaContext::new` does).

use cudarc::driver::result;

/// `Ok(())` when libcuda and libnvrtc load and at least one device answers; otherwise why not.
pub fn probe() -> Result<(), String> {
    device_count().map(|_| ())
}

/// How many CUDA devices this process sees (after `CUDA_VISIBLE_DEVICES` and any cgroup a
/// scheduler set), at least 1; otherwise why none is usable, as [`probe`] says it.
pub fn device_count() -> Result<usize, String> {
    // SAFETY: only tries to dlopen the driver library by its usual names; no symbol is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("libcuda (the NVIDIA driver library) was not found".into());
    }
    result::init().map_err(|e| format!("cuInit failed: {e}"))?;
    let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {e}"))?;
    if count <= 0 {
        return Err("the CUDA driver reports no device".into());
    }
    // SAFETY: as above, a dlopen of libnvrtc by its usual names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("libnvrtc (the CUDA runtime compiler) was not found; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH".into());
    }
    Ok(count as usize)
}
