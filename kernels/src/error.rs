//! Errors of the kernels crate.

/// An error from a kernel or an engine.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The configuration cannot be run (bad sizes, unknown device...).
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    /// No usable CUDA device or driver.
    #[error("cuda unavailable: {0}")]
    CudaUnavailable(String),
    /// A CUDA driver, NVRTC or cuBLAS call failed.
    #[error("cuda error in {context}: {message}")]
    Cuda {
        /// What drover was doing.
        context: &'static str,
        /// The driver's message.
        message: String,
    },
    /// A buffer handed to a kernel has the wrong length.
    #[error("buffer `{name}` has length {got}, expected {expected}")]
    Length {
        /// Buffer name.
        name: &'static str,
        /// Length received.
        got: usize,
        /// Length expected.
        expected: usize,
    },
}
