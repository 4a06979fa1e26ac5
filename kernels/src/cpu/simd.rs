//! Instruction-set dispatch of the CPU engine: which vector width its hot loops run at, picked
//! once per engine from what the running CPU supports (the binary itself stays portable).

use crate::KernelError;

/// The environment variable that chooses the CPU engines' level ([`SimdLevel::from_env`]).
pub const SIMD_ENV: &str = "DROVER_SIMD";

/// Whether a [`SIMD_ENV`] value names a level, rather than asking for the best one (empty or
/// `auto`).
fn names_a_level(value: &str) -> bool {
    !matches!(value.trim(), "" | "auto")
}

/// The vector instruction set the CPU engine's hot loops use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// Plain Rust loops compiled for the baseline target (SSE2 on x86-64, NEON on AArch64).
    /// The fused policy forward then reproduces the reference's sums bit for bit (no fused
    /// multiply-add).
    Portable,
    /// AArch64 Advanced SIMD (NEON; every AArch64 server core: Neoverse in AWS Graviton and
    /// NVIDIA Grace, Ampere Altra): each kernel vector is a pair of 4-lane registers, so the
    /// dense layers run AVX2's tiles in the same order with fused multiply-add, and 32
    /// registers hold AVX2's 16 accumulators of 8 lanes.
    Neon,
    /// AVX2 with FMA: 8 f32 lanes, register-blocked micro-kernels for the dense layers (the
    /// level of x86-64 server cores without AVX-512, e.g. AMD Zen 2 and 3, Intel Haswell to
    /// Skylake client parts). Dense layers use fused multiply-add, as at AVX-512.
    Avx2,
    /// AVX-512 (F, DQ, BW, VL) with FMA: 16 f32 lanes, register-blocked GEMM micro-kernels.
    /// Dense layers use fused multiply-add, so sums differ from the reference in the last bits.
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU supports.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(Self::Portable)
    }

    /// The level the engines use: the one [`SIMD_ENV`] names, or the best this CPU supports
    /// when it is unset, empty or `auto`. A named level this CPU lacks runs as its
    /// [`twin`](Self::twin) where the CPU has that (logged once): `avx2` on an AArch64 node is
    /// `neon`, which computes the same bits. An error when it names no level, or one that
    /// neither this CPU nor a twin of it runs. Every machine computes the same bits at the same
    /// level, so setting it for every job of a sweep makes runs on a mix of AVX-512, AVX2 and
    /// AArch64 nodes reproducible.
    pub fn from_env() -> Result<Self, KernelError> {
        let value = match std::env::var(SIMD_ENV) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => return Ok(Self::detect()),
            Err(std::env::VarError::NotUnicode(v)) => v.to_string_lossy().into_owned(),
        };
        let level = Self::resolve(&value)
            .map_err(|reason| KernelError::InvalidConfig(format!("environment variable `{SIMD_ENV}`: {reason}")))?;
        let named = Self::from_name(value.trim());
        if let Some(named) = named.filter(|&n| n != level) {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    "{SIMD_ENV}={}: this CPU cannot run it; running `{}`, which computes the same bits",
                    named.name(),
                    level.name()
                );
            });
        }
        Ok(level)
    }

    /// What a pinned level runs as here: [`parse`](Self::parse), except that a level this CPU
    /// lacks gives its twin where the CPU runs that. A sweep pinned to `avx2` so that its
    /// AVX2 and AArch64 nodes agree then runs on both kinds (`parse`, which benchmarks use,
    /// keeps to the level named).
    pub fn resolve(value: &str) -> Result<Self, String> {
        Self::parse(value).or_else(|why| Self::from_name(value.trim()).and_then(Self::here).ok_or(why))
    }

    /// Whether [`SIMD_ENV`] names a level (rather than being unset, empty or `auto`): the
    /// user's choice, which a resumed run keeps over its checkpoint's level.
    pub fn pinned_by_env() -> bool {
        std::env::var(SIMD_ENV).is_ok_and(|v| names_a_level(&v))
    }

    /// `auto` (or empty): the best supported level; a level's name: that level, if this CPU
    /// can run it. The error says why not.
    pub fn parse(value: &str) -> Result<Self, String> {
        if !names_a_level(value) {
            return Ok(Self::detect());
        }
        let v = value.trim();
        let level = Self::from_name(v)
            .ok_or_else(|| format!("`{v}` is not one of auto, avx512, avx2, neon, portable"))?;
        level.supported_or_why().map(|()| level)
    }

    /// `Ok` when this CPU can run the level, else an error naming it.
    pub fn require(self) -> Result<(), KernelError> {
        self.supported_or_why().map_err(KernelError::InvalidConfig)
    }

    /// `Ok` when this CPU can run the level, else why not, naming it.
    fn supported_or_why(self) -> Result<(), String> {
        if self.is_supported() {
            return Ok(());
        }
        let mut why = format!("this CPU cannot run the `{}` instruction set", self.name());
        if let Some(twin) = self.here() {
            why += &format!("; `{}` computes the same bits here", twin.name());
        }
        Err(why)
    }

    /// Every level, narrowest first; [`SimdLevel::detect`] picks the last one this CPU runs.
    pub const ALL: [Self; 4] = [Self::Portable, Self::Neon, Self::Avx2, Self::Avx512];

    /// The level named `name` (`portable`, `neon`, `avx2`, `avx512`), as [`SimdLevel::name`]
    /// spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether the running CPU can execute this level.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
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
            Self::Avx2 | Self::Avx512 => false,
            // Advanced SIMD is part of every AArch64 application core (Rust's Linux targets
            // assume it); asking keeps the check honest on targets that do not.
            #[cfg(target_arch = "aarch64")]
            Self::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(not(target_arch = "aarch64"))]
            Self::Neon => false,
        }
    }

    /// The level of the other architecture that computes the same bits, if any: NEON runs
    /// AVX2's tile plans and reduction trees on the same 8 lanes (`vector::F32x8` mirrors
    /// `__m256` operation for operation), so a run goes on bit for bit from one to the other
    /// (`kernels/tests/it/train.rs`, `eight_lane_levels_train_to_the_same_bits`, checks a
    /// training run on both).
    pub fn twin(self) -> Option<Self> {
        match self {
            Self::Avx2 => Some(Self::Neon),
            Self::Neon => Some(Self::Avx2),
            Self::Portable | Self::Avx512 => None,
        }
    }

    /// This level where this CPU runs it, else its [`twin`](Self::twin) where this CPU runs
    /// that: the level that computes this level's bits here.
    pub fn here(self) -> Option<Self> {
        [Some(self), self.twin()].into_iter().flatten().find(|l| l.is_supported())
    }

    /// f32 lanes of one vector of the kernels at this level (at `neon`, a pair of registers).
    pub fn lanes(self) -> usize {
        match self {
            Self::Portable => 4,
            Self::Neon | Self::Avx2 => 8,
            Self::Avx512 => 16,
        }
    }

    /// Short name for reports (`portable`, `neon`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Neon => "neon",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

/// The levels this CPU runs, for tests that compare every level; each one skipped says so.
#[cfg(test)]
pub(crate) fn testable_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| {
            let ok = l.is_supported();
            if !ok {
                println!("skipped {}: not supported by this CPU", l.name());
            }
            ok
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_parse_checks_support() {
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::from_name(level.name()), Some(level));
            match SimdLevel::parse(level.name()) {
                Ok(l) => assert_eq!(l, level),
                Err(why) => {
                    assert!(!level.is_supported(), "{}: {why}", level.name());
                    assert!(why.contains("cannot run"), "{why}");
                }
            }
        }
        assert_eq!(SimdLevel::parse("auto"), Ok(SimdLevel::detect()));
        assert_eq!(SimdLevel::parse(" "), Ok(SimdLevel::detect()));
        assert_eq!(SimdLevel::parse(" portable "), Ok(SimdLevel::Portable));
        let err = SimdLevel::parse("avx1024").expect_err("no such level");
        assert!(err.contains("avx1024") && err.contains("avx2"), "{err}");
        assert!(SimdLevel::detect().is_supported());
        // Lanes never shrink along `ALL`, so `detect` (the last supported) is the widest.
        assert!(SimdLevel::ALL.windows(2).all(|w| w[0].lanes() <= w[1].lanes()));
        // One architecture's levels only: x86-64 has no NEON, AArch64 no AVX.
        assert!(!(SimdLevel::Neon.is_supported() && SimdLevel::Avx2.is_supported()));
        assert_eq!(SimdLevel::Neon.is_supported(), cfg!(target_arch = "aarch64"));
        // Twins pair up both ways; `here` is the level itself where supported, else its twin.
        for level in SimdLevel::ALL {
            assert_eq!(level.twin().and_then(SimdLevel::twin).unwrap_or(level), level);
            match level.here() {
                Some(h) => assert!(h.is_supported() && (h == level || level.twin() == Some(h))),
                None => assert!(!level.is_supported() && !level.twin().is_some_and(SimdLevel::is_supported)),
            }
        }
        assert_eq!(SimdLevel::Avx2.twin(), Some(SimdLevel::Neon));
        // Asking for the other architecture's twin names the one to ask for instead.
        for (level, twin) in [(SimdLevel::Neon, SimdLevel::Avx2), (SimdLevel::Avx2, SimdLevel::Neon)] {
            if twin.is_supported() {
                let why = SimdLevel::parse(level.name()).expect_err("the other architecture");
                assert!(why.ends_with(&format!("; `{}` computes the same bits here", twin.name())), "{why}");
            }
        }
        assert_eq!(SimdLevel::Avx512.twin(), None);
    }

    /// A pinned level resolves to itself where this CPU runs it, else to its twin where the
    /// CPU runs that, else to `parse`'s error; names that are no level stay errors.
    #[test]
    fn a_pinned_level_resolves_to_its_twin_where_only_the_twin_runs() {
        for level in SimdLevel::ALL {
            let resolved = SimdLevel::resolve(&format!(" {} ", level.name()));
            match (level.is_supported(), level.twin().filter(|t| t.is_supported())) {
                (true, _) => assert_eq!(resolved, Ok(level)),
                (false, Some(twin)) => assert_eq!(resolved, Ok(twin), "{}", level.name()),
                (false, None) => assert_eq!(resolved, SimdLevel::parse(level.name()), "{}", level.name()),
            }
        }
        assert_eq!(SimdLevel::resolve("auto"), Ok(SimdLevel::detect()));
        assert!(SimdLevel::resolve("avx1024").is_err_and(|why| why.contains("is not one of")));
        // An eight-lane pin runs on every machine that has either eight-lane level.
        if SimdLevel::Avx2.is_supported() || SimdLevel::Neon.is_supported() {
            assert_eq!(SimdLevel::resolve("avx2"), SimdLevel::resolve("neon"));
        }
    }
}
