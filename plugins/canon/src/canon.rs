//! CANON's advantage (group halves by a metric) and its μ schedule.

use std::collections::BTreeMap;
use std::f64::consts::PI;

/// What each group is sorted by before it is cut into halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMetric {
    /// Mean old-policy token entropy over the response's valid tokens.
    Entropy,
    /// Response length: the `length` metadata column, or the count of valid tokens.
    Length,
}

/// How μ moves from `start` to `end` over `iterations` training iterations, then stays at `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MuSchedule {
    /// μ = `start` throughout.
    Constant {
        /// The value.
        start: f64,
    },
    /// μ = start + (end − start)·p, p = min(i/iterations, 1).
    Linear {
        /// μ at iteration 0.
        start: f64,
        /// μ from `iterations` on.
        end: f64,
        /// Length of the ramp.
        iterations: u64,
    },
    /// μ = end + (start − end)·(1 + cos πp)/2, p = min(i/iterations, 1).
    Cosine {
        /// μ at iteration 0.
        start: f64,
        /// μ from `iterations` on.
        end: f64,
        /// Length of the anneal.
        iterations: u64,
    },
}

impl MuSchedule {
    /// μ after `done` finished iterations.
    pub fn at(&self, done: u64) -> f64 {
        let progress = |n: u64| {
            if n == 0 {
                1.0
            } else {
                (done as f64 / n as f64).min(1.0)
            }
        };
        match *self {
            Self::Constant { start } => start,
            Self::Linear {
                start,
                end,
                iterations,
            } => start + (end - start) * progress(iterations),
            Self::Cosine {
                start,
                end,
                iterations,
            } => end + (start - end) * 0.5 * (1.0 + (PI * progress(iterations)).cos()),
        }
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Per-sequence CANON advantages and the mean score gap between upper and lower halves.
///
/// Within each group of `k ≥ 2` the responses are sorted by `metric` (ascending, ties by
/// position, so the split is deterministic) and cut into the lower ⌊k/2⌋ (C⁻) and the upper
/// ⌈k/2⌉ (C⁺): an odd group's middle response joins C⁺. A response in half `own` gets
/// `A = [μ(R − mean(other)) + (1 − μ)(R − mean(own))]/max_len`. With even halves and μ = ½ this is
/// `(R − mean(group))/max_len`, Dr. GRPO's advantage over its constant. A group of one has no
/// halves: it gets `R/max_len` (verl's convention for singleton groups: mean 0).
///
/// Returns (advantages, mean over groups of mean(C⁺) − mean(C⁻)).
pub fn canon_advantages(
    scores: &[f64],
    metric: &[f64],
    group_ids: &[u32],
    mu: f64,
    max_len: f64,
) -> (Vec<f64>, Option<f64>) {
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (b, &g) in group_ids.iter().enumerate().take(scores.len()) {
        groups.entry(g).or_default().push(b);
    }
    let mut all: Vec<Vec<usize>> = groups.into_values().collect();
    all.extend((group_ids.len()..scores.len()).map(|b| vec![b]));
    let mut adv = vec![0.0; scores.len()];
    let mut gaps = Vec::new();
    for mut idx in all {
        if idx.len() < 2 {
            for &b in &idx {
                adv[b] = scores[b] / max_len;
            }
            continue;
        }
        idx.sort_by(|&a, &b| metric[a].total_cmp(&metric[b]).then(a.cmp(&b)));
        let (lo, hi) = idx.split_at(idx.len() / 2);
        let (m_lo, m_hi) = (
            mean(lo.iter().map(|&b| scores[b])),
            mean(hi.iter().map(|&b| scores[b])),
        );
        gaps.push(m_hi - m_lo);
        for (half, own, other) in [(lo, m_lo, m_hi), (hi, m_hi, m_lo)] {
            for &b in half {
                let r = scores[b];
                adv[b] = (mu * (r - other) + (1.0 - mu) * (r - own)) / max_len;
            }
        }
    }
    let gap = (!gaps.is_empty()).then(|| mean(gaps.iter().copied()));
    (adv, gap)
}
