//! CHORD (Zhang et al. 2025, arXiv 2508.11408) as a drover algorithm plugin: GRPO on the
//! on-policy responses mixed with a φ-weighted SFT loss on the expert responses,
//! `L = (1−μ)·L_GRPO + μ·L_SFT-φ`, μ on Trinity-RFT's warmup-then-cosine schedule.
//!
//! `chord.rs` holds the pure pieces (μ schedule, φ, the SFT-φ token loss), `algorithm.rs` the
//! parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl). Expert responses
//! come from the host (`run.expert_per_group`), flagged by the `is_expert` metadata column.

mod algorithm;
mod chord;

pub use crate::algorithm::{Chord, ChordConfig};
pub use crate::chord::{phi, sft_token_loss, MuSchedule};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Chord);
