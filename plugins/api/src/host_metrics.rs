//! The metrics-row columns the host writes itself, and the names a plugin metric may not take.
//!
//! This module is the one list of them: `drover-job` writes its columns under these constants,
//! the host refuses a plugin metric named like one (`drover-plugin-host`, at every call that
//! returns metrics), and the harness (`testing::run_checks`) flags it. The plugin's own fixed
//! columns (`policy_loss`, `value_loss`, `entropy`, `approx_kl`, `clip_frac`) are not reserved:
//! a plugin reports them from its advantage and loss stages.

/// 1-based training iteration.
pub const ITERATION: &str = "iteration";
/// Environment steps so far.
pub const GLOBAL_STEP: &str = "global_step";
/// Episodes finished in the iteration.
pub const EPISODES: &str = "episodes";
/// Mean return of the episodes finished in the iteration.
pub const EPISODIC_RETURN_MEAN: &str = "episodic_return_mean";
/// Learning rate used.
pub const LR: &str = "lr";
/// Environment steps per second of the iteration.
pub const STEPS_PER_SEC: &str = "steps_per_sec";
/// Seconds since the job started.
pub const WALL_TIME_S: &str = "wall_time_s";
/// Gradient norm before clipping, mean over the iteration's minibatches.
pub const GRAD_NORM: &str = "grad_norm";
/// Sequence tasks: success rate per prompt group.
pub const ACCURACY: &str = "accuracy";
/// Sequence tasks: mean policy entropy over the sampled tokens.
pub const TOKEN_ENTROPY: &str = "token_entropy";
/// Sequence tasks: fraction of prompt groups `keep_group` accepted.
pub const KEPT_GROUP_FRAC: &str = "kept_group_frac";
/// Dataset runs: smallest prompt group of the first generation batch.
pub const GROUP_SIZE_MIN: &str = "group_size_min";
/// Dataset runs: largest prompt group of the first generation batch.
pub const GROUP_SIZE_MAX: &str = "group_size_max";
/// Dynamic sampling: generation batches of the iteration.
pub const GEN_BATCHES: &str = "gen_batches";
/// Dynamic sampling: fraction of the training batch filled by accepted groups.
pub const BATCH_FILL: &str = "batch_fill";

/// Every column the host writes itself: no plugin metric may have one of these names.
pub const RESERVED: [&str; 15] = [
    ITERATION,
    GLOBAL_STEP,
    EPISODES,
    EPISODIC_RETURN_MEAN,
    LR,
    STEPS_PER_SEC,
    WALL_TIME_S,
    GRAD_NORM,
    ACCURACY,
    TOKEN_ENTROPY,
    KEPT_GROUP_FRAC,
    GROUP_SIZE_MIN,
    GROUP_SIZE_MAX,
    GEN_BATCHES,
    BATCH_FILL,
];

/// Why `name` cannot name a metric a plugin returns, if it cannot: it is empty, one of
/// [`RESERVED`], or starts with [`INPUT_PREFIX`](crate::INPUT_PREFIX) (the host's inputs to
/// `on_iteration`, never logged).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a metric has an empty name".to_owned());
    }
    if RESERVED.contains(&name) {
        return Some(format!(
            "metric `{name}` has the name of a column the host writes itself; rename it \
             (reserved: {})",
            RESERVED.join(", ")
        ));
    }
    if name.starts_with(crate::INPUT_PREFIX) {
        return Some(format!(
            "metric `{name}` starts with `{}`, the prefix of the host's inputs to \
             `on_iteration`, which are never logged; rename it",
            crate::INPUT_PREFIX
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_empty_names_and_the_input_prefix_are_refused() {
        assert_eq!(name_problem("adv_std_raw"), None);
        assert_eq!(name_problem("policy_loss"), None, "the plugin's own fixed column");
        let lr = name_problem("lr").unwrap();
        assert!(lr.contains("metric `lr`") && lr.contains("reserved: iteration, global_step"), "{lr}");
        assert!(RESERVED.iter().all(|n| name_problem(n).is_some()));
        assert!(name_problem("").is_some());
        assert!(name_problem("input.budget").unwrap().contains("`input.`"));
    }
}
