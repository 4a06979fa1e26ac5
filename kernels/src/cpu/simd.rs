//! Instruction-set dispatch of the CPU engine: which vector width its hot loops run at, picked
//! once per engine from what the running CPU supports (the binary itself stays portable).

/// The vector instruction set the CPU engine's hot loops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// Plain Rust loops compiled for the baseline target (SSE2 on x86-64). The fused policy
    /// forward then reproduces the reference's sums bit for bit (no fused multiply-add).
    Portable,
    /// AVX-512 (F, DQ, BW, VL) with FMA: 16 f32 lanes, register-blocked GEMM micro-kernels.
    /// Dense layers use fused multiply-add, so sums differ from the reference in the last bits.
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU supports.
    pub fn detect() -> Self {
        if Self::Avx512.is_supported() {
            Self::Avx512
        } else {
            Self::Portable
        }
    }

    /// Whether the running CPU can execute this level.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 => false,
        }
    }

    /// f32 lanes of one vector register at this level.
    pub fn lanes(self) -> usize {
        match self {
            Self::Portable => 4,
            Self::Avx512 => 16,
        }
    }

    /// Short name for reports (`portable`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx512 => "avx512",
        }
    }
}
