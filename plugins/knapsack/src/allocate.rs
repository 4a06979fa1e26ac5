//! Knapsack RL's budget allocation: per-prompt group sizes for the next generation batch that
//! maximise the summed value of the prompts' expected gradients under a total budget.
//!
//! The problem (Knapsack RL, arXiv 2509.25849, §3): prompt `i` with success
//! rate `p_i` and `N_i` responses is worth
//! `Value(N_i, p_i) = (1 − p_i^N_i − (1 − p_i)^N_i) · p_i (1 − p_i)²`, the probability that its
//! group is not uniform (so GRPO's advantage is non-zero) times a gradient-size proxy. Choose
//! `N_i ∈ [n_min, n_max]` for every prompt with `0 < p_i < 1` to maximise `Σ_i Value(N_i, p_i)`
//! with the batch's responses summing to the budget.
//!
//! Differences from the reference (`sampling_budget_by_knapsack` / `solve_by_dp` in the
//! authors' code), each deliberate:
//! - the reference scores an item at its minimum (`k = 0` extra) as 0 and at `k ≥ 1` extra as
//!   `Value(n_min + k)`, so the first extra response seems to earn the whole value; here every
//!   size is scored by `Value(N)` itself, so the objective is the paper's `Σ Value(N_i, p_i)`;
//! - the reference first caps each item's share by an estimated cost (`alpha = 0.9`, the
//!   responses needed to see one success and one failure) and sends the excess to `p = 0`
//!   prompts; here the knapsack alone decides up to `n_max`, and only what it cannot spend is
//!   handed out (the fallback below);
//! - the reference assumes the budget covers the minimums; here too small a budget is scaled
//!   down proportionally (see [`allocate`]), so the sizes always sum to the budget.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The knapsack's table (`items × (spend + 1)` choices) is at most this many cells (64 MiB),
/// and filling it at most [`MAX_DP_STEPS`] steps; bigger problems use the exact greedy
/// ([`allocate`] says why it is exact).
const MAX_DP_CELLS: usize = 1 << 24;

/// Most `cells × (choices per cell)` the dynamic programme may take (well under a second).
const MAX_DP_STEPS: usize = 1 << 28;

/// The group-size bounds of one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The fewest responses a seen prompt gets (the paper's `min_n`): the knapsack's lower bound
    /// for prompts with `0 < p < 1`, and exactly what `p = 0` and `p = 1` prompts get before any
    /// fallback.
    pub n_min: u32,
    /// The most responses the knapsack gives one prompt; a value below `n_min` acts as `n_min`.
    pub n_max: u32,
    /// What a prompt never seen before gets (the run's `group_size`): it has no estimate.
    pub group_size: u32,
}

/// One allocation and what it is worth.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// Responses per prompt, in the order of the rates given; they sum to the budget unless
    /// there was no prompt at all.
    pub sizes: Vec<u32>,
    /// `Σ Value(sizes[i], p_i)` over the prompts with `0 < p_i < 1` (the others are worth 0).
    pub objective: f64,
    /// How many prompts had `0 < p < 1` (the knapsack's items).
    pub effective: usize,
    /// Responses the knapsack could not place (every item at `n_max`, or no item), handed out
    /// by the fallback.
    pub leftover: u64,
    /// Whether the budget was below the minimums and every size was scaled down.
    pub scaled_down: bool,
}

/// `Value(n, p) = (1 − p^n − (1 − p)^n) · p (1 − p)²` for `0 < p < 1`; 0 for `p ≤ 0`, `p ≥ 1`,
/// NaN and for `n = 0` (where the formula would give a negative worth to asking nothing).
pub fn value(n: u32, p: f64) -> f64 {
    if n == 0 || !(p > 0.0 && p < 1.0) {
        return 0.0;
    }
    let q = 1.0 - p;
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    (1.0 - p.powi(n) - q.powi(n)) * p * q * q
}

/// What is known of one prompt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// No estimate (never seen, or NaN).
    Unseen,
    /// `p ≤ 0`: no response has succeeded yet.
    Hard,
    /// `p ≥ 1`: every response succeeded.
    Solved,
    /// `0 < p < 1`: a knapsack item.
    Effective(f64),
}

fn kind(p: Option<f64>) -> Kind {
    match p {
        None => Kind::Unseen,
        Some(p) if p.is_nan() => Kind::Unseen,
        Some(p) if p <= 0.0 => Kind::Hard,
        Some(p) if p >= 1.0 => Kind::Solved,
        Some(p) => Kind::Effective(p),
    }
}

/// Group sizes for the next batch: one per entry of `rates` (`None`: the prompt has no
/// estimate), summing to `budget`.
///
/// 1. Every prompt gets its minimum: `group_size` when unseen, `n_min` otherwise.
/// 2. If those minimums exceed `budget`, they are scaled down proportionally instead:
///    prompt `i` gets `⌊budget·min_i/Σmin⌋`, and the responses still missing go one each to
///    the largest remainders `budget·min_i mod Σmin`, ties to the earlier prompt (Hamilton's
///    method). Nothing else happens then.
/// 3. The rest is a knapsack over the prompts with `0 < p < 1`: each gets `x_i ∈ [0,
///    n_max − n_min]` extra, spending `min(rest, items·(n_max − n_min))` exactly, to maximise
///    `Σ Value(n_min + x_i, p_i)`. It is a dynamic programme over the spent budget (`O(items ·
///    spend · (n_max − n_min))` time); ties keep the first choice found, so the result is
///    deterministic. Because `Value(N + 1) − Value(N) = p(1−p)²·(p^N (1−p) + (1−p)^N p)`
///    decreases with `N`, the objective is separable and concave, so adding one response at a
///    time where it gains most is also exact; that greedy replaces the table when the table
///    would exceed 2^24 cells or 2^28 steps.
/// 4. What the knapsack cannot spend (all items at `n_max`, or no item) is handed out evenly,
///    in prompt order (the first `leftover mod k` targets get one more), to the `p = 0` prompts
///    (hard prompts: exploration), or to every prompt when there is none.
///
/// With no prompt, the sizes are empty whatever the budget.
pub fn allocate(rates: &[Option<f64>], budget: u32, bounds: Bounds) -> Allocation {
    let n_min = bounds.n_min;
    let n_max = bounds.n_max.max(n_min);
    let kinds: Vec<Kind> = rates.iter().map(|&p| kind(p)).collect();
    let effective: Vec<usize> = (0..kinds.len())
        .filter(|&i| matches!(kinds[i], Kind::Effective(_)))
        .collect();
    let mins: Vec<u64> = kinds
        .iter()
        .map(|k| {
            u64::from(if *k == Kind::Unseen {
                bounds.group_size
            } else {
                n_min
            })
        })
        .collect();
    let base: u64 = mins.iter().sum();
    let budget = u64::from(budget);
    let mut out = Allocation {
        sizes: Vec::new(),
        objective: 0.0,
        effective: effective.len(),
        leftover: 0,
        scaled_down: false,
    };
    if rates.is_empty() {
        return out;
    }
    let sizes: Vec<u64> = if base > budget {
        out.scaled_down = true;
        scale_down(&mins, base, budget)
    } else {
        let rest = budget - base;
        let cap = u64::from(n_max - n_min);
        let spend = rest.min(cap.saturating_mul(effective.len() as u64));
        let ps: Vec<f64> = effective
            .iter()
            .map(|&i| match kinds[i] {
                Kind::Effective(p) => p,
                _ => 0.0,
            })
            .collect();
        let extras = knapsack(&ps, n_min, n_max - n_min, spend);
        let mut sizes = mins;
        for (&i, x) in effective.iter().zip(extras) {
            sizes[i] += u64::from(x);
        }
        out.leftover = rest - spend;
        let hard: Vec<usize> = (0..kinds.len())
            .filter(|&i| kinds[i] == Kind::Hard)
            .collect();
        let targets: Vec<usize> = if hard.is_empty() {
            (0..kinds.len()).collect()
        } else {
            hard
        };
        let k = targets.len() as u64;
        for (j, &i) in targets.iter().enumerate() {
            sizes[i] += out.leftover / k + u64::from((j as u64) < out.leftover % k);
        }
        sizes
    };
    // Every size is at most the budget, a u32.
    out.sizes = sizes
        .iter()
        .map(|&n| u32::try_from(n).unwrap_or(u32::MAX))
        .collect();
    out.objective = out
        .sizes
        .iter()
        .zip(&kinds)
        .map(|(&n, k)| match k {
            Kind::Effective(p) => value(n, *p),
            _ => 0.0,
        })
        .sum();
    out
}

/// Hamilton's apportionment of `budget` (< `base`) in proportion to `mins` (summing to `base`).
fn scale_down(mins: &[u64], base: u64, budget: u64) -> Vec<u64> {
    // budget < 2^32 and min_i < 2^32, so the products fit.
    let mut sizes: Vec<u64> = mins.iter().map(|&m| budget * m / base).collect();
    let missing = budget - sizes.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..mins.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(budget * mins[i] % base), i));
    for &i in order
        .iter()
        .take(usize::try_from(missing).unwrap_or(usize::MAX))
    {
        sizes[i] += 1;
    }
    sizes
}

/// The extra responses `x_i ∈ [0, cap]` of items with success rates `ps`, summing to `spend`
/// (at most `ps.len()·cap`), that maximise `Σ Value(n_min + x_i, p_i)`.
fn knapsack(ps: &[f64], n_min: u32, cap: u32, spend: u64) -> Vec<u32> {
    let width = usize::try_from(spend).ok().and_then(|s| s.checked_add(1));
    let choices = usize::try_from(u64::from(cap).min(spend) + 1).unwrap_or(usize::MAX);
    match width {
        Some(width)
            if ps.len().saturating_mul(width) <= MAX_DP_CELLS
                && ps.len().saturating_mul(width).saturating_mul(choices) <= MAX_DP_STEPS =>
        {
            knapsack_dp(ps, n_min, cap, width)
        }
        _ => knapsack_greedy(ps, n_min, cap, spend),
    }
}

/// The dynamic programme: `best[w]` is the most the items so far are worth with exactly `w`
/// extra responses among them, and `pick[i][w]` item `i`'s share in that optimum.
fn knapsack_dp(ps: &[f64], n_min: u32, cap: u32, width: usize) -> Vec<u32> {
    let spend = width - 1;
    let cap = usize::try_from(cap).unwrap_or(usize::MAX).min(spend);
    let mut best = vec![f64::NEG_INFINITY; width];
    best[0] = 0.0;
    let mut pick = vec![0u32; ps.len() * width];
    for (i, &p) in ps.iter().enumerate() {
        // cap ≤ spend ≤ u32::MAX here, so n_min + x stays within n_max.
        let worth: Vec<f64> = (0..=cap).map(|x| value(n_min + x as u32, p)).collect();
        let mut next = vec![f64::NEG_INFINITY; width];
        for w in 0..width {
            for (x, &v) in worth.iter().enumerate().take(w.min(cap) + 1) {
                let prev = best[w - x];
                if prev > f64::NEG_INFINITY && prev + v > next[w] {
                    next[w] = prev + v;
                    pick[i * width + w] = x as u32;
                }
            }
        }
        best = next;
    }
    let mut extras = vec![0u32; ps.len()];
    let mut w = spend;
    for i in (0..ps.len()).rev() {
        extras[i] = pick[i * width + w];
        w -= extras[i] as usize;
    }
    extras
}

/// One candidate response for [`knapsack_greedy`]: what item `item` gains from it.
#[derive(Debug, PartialEq)]
struct Gain {
    gain: f64,
    item: usize,
}

impl Eq for Gain {}

impl Ord for Gain {
    /// The larger gain first; among equal gains, the earlier item.
    fn cmp(&self, other: &Self) -> Ordering {
        self.gain
            .total_cmp(&other.gain)
            .then_with(|| other.item.cmp(&self.item))
    }
}

impl PartialOrd for Gain {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The marginal-gain greedy, exact for concave values: `spend` times, one more response to the
/// item whose value rises most.
fn knapsack_greedy(ps: &[f64], n_min: u32, cap: u32, spend: u64) -> Vec<u32> {
    let gain = |p: f64, n: u32| value(n + 1, p) - value(n, p);
    let mut extras = vec![0u32; ps.len()];
    let mut heap: BinaryHeap<Gain> = ps
        .iter()
        .enumerate()
        .filter(|_| cap > 0)
        .map(|(item, &p)| Gain {
            gain: gain(p, n_min),
            item,
        })
        .collect();
    for _ in 0..spend {
        let Some(Gain { item, .. }) = heap.pop() else {
            break;
        };
        extras[item] += 1;
        if extras[item] < cap {
            heap.push(Gain {
                gain: gain(ps[item], n_min + extras[item]),
                item,
            });
        }
    }
    extras
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::CounterRng;

    use super::*;

    const B: Bounds = Bounds {
        n_min: 2,
        n_max: 4,
        group_size: 4,
    };

    fn bounds(n_min: u32, n_max: u32, group_size: u32) -> Bounds {
        Bounds {
            n_min,
            n_max,
            group_size,
        }
    }

    /// Σ Value over the prompts with 0 < p < 1, written out again from the formula.
    fn worth(sizes: &[u32], rates: &[Option<f64>]) -> f64 {
        sizes
            .iter()
            .zip(rates)
            .map(|(&n, p)| match p {
                // A skipped prompt is worth nothing (the formula would say −p(1−p)²).
                Some(p) if *p > 0.0 && *p < 1.0 && n > 0 => {
                    let n = n as i32;
                    (1.0 - p.powi(n) - (1.0 - p).powi(n)) * p * (1.0 - p).powi(2)
                }
                _ => 0.0,
            })
            .sum()
    }

    /// The best `worth` over every allocation with `Σ N_i ≤ budget`, `N_i ≥ group_size`
    /// (unseen) or `≥ n_min` (seen), and `N_i ≤ n_max` where `0 < p_i < 1`, by trying them all.
    /// (Only the items' sizes change the worth, so the others stay at their minimums.)
    fn brute_force(rates: &[Option<f64>], budget: u32, b: Bounds) -> f64 {
        fn go(i: usize, left: u32, sizes: &mut Vec<u32>, rates: &[Option<f64>], b: Bounds) -> f64 {
            if i == rates.len() {
                return worth(sizes, rates);
            }
            let (lo, hi) = match rates[i] {
                None => (b.group_size, b.group_size),
                Some(p) if p > 0.0 && p < 1.0 => (b.n_min, b.n_max.max(b.n_min)),
                Some(_) => (b.n_min, b.n_min),
            };
            let mut best = f64::NEG_INFINITY;
            for n in lo..=hi.min(left) {
                sizes.push(n);
                best = best.max(go(i + 1, left - n, sizes, rates, b));
                sizes.pop();
            }
            best
        }
        go(0, budget, &mut Vec::new(), rates, b)
    }

    fn random_rates(rng: &mut CounterRng, count: usize) -> Vec<Option<f64>> {
        (0..count)
            .map(|_| match rng.below(6) {
                0 => None,
                1 => Some(0.0),
                2 => Some(1.0),
                // Success rates a group of 1..8 can show, as the plugin measures them.
                _ => {
                    let n = 1 + rng.below(8);
                    Some(rng.below(n + 1) as f64 / n as f64)
                }
            })
            .collect()
    }

    fn min_of(p: Option<f64>, b: Bounds) -> u32 {
        if p.is_none() {
            b.group_size
        } else {
            b.n_min
        }
    }

    #[test]
    fn value_by_hand() {
        // p = ½, N = 2: (1 − ¼ − ¼)·½·¼ = 1/16.
        assert!((value(2, 0.5) - 0.0625).abs() < 1e-15);
        // p = 0.9, N = 3: (1 − 0.729 − 0.001)·0.9·0.01 = 0.27·0.009.
        assert!((value(3, 0.9) - 0.00243).abs() < 1e-12);
        for p in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(value(4, p), 0.0, "{p}");
        }
        assert_eq!(value(0, 0.5), 0.0);
        assert_eq!(value(1, 0.3), 0.0);
    }

    /// Two prompts, p = 0.5 and p = 0.9, budget 6, n_min 2, n_max 4: 2 responses are left after
    /// the minimums, so (N₁, N₂) ∈ {(4, 2), (3, 3), (2, 4)}.
    /// Value(·, 0.5) = (1 − 2·0.5^N)·0.125: N = 2, 3, 4 → 0.0625, 0.09375, 0.109375.
    /// Value(·, 0.9) = (1 − 0.9^N − 0.1^N)·0.009: N = 2, 3, 4 → 0.00162, 0.00243, 0.0030942.
    /// Sums: (4, 2) 0.110995, (3, 3) 0.09618, (2, 4) 0.0655942, so (4, 2) wins.
    #[test]
    fn two_prompts_by_hand() {
        let a = allocate(&[Some(0.5), Some(0.9)], 6, B);
        assert_eq!(a.sizes, [4, 2]);
        assert!((a.objective - 0.110_995).abs() < 1e-12, "{a:?}");
        assert_eq!((a.effective, a.leftover, a.scaled_down), (2, 0, false));
        // Two equal prompts split evenly: (3, 3) 0.1875 beats (4, 2) 0.171875.
        assert_eq!(allocate(&[Some(0.5), Some(0.5)], 6, B).sizes, [3, 3]);
    }

    /// Where scoring the minimum as 0 (the reference's `k = 0`) picks differently: p = 0.2 and
    /// p = 0.6 with n_min 3 and one response to place (budget 7).
    /// Value(·, 0.2) = (1 − 0.2^N − 0.8^N)·0.128: N = 3, 4 → 0.06144, 0.0753664.
    /// Value(·, 0.6) = (1 − 0.6^N − 0.4^N)·0.096: N = 3, 4 → 0.06912, 0.0811008.
    /// Here: (4, 3) = 0.1444864 beats (3, 4) = 0.1425408. The reference compares 0.0753664
    /// with 0.0811008 and gives the response to p = 0.6.
    #[test]
    fn the_minimum_counts_unlike_the_reference() {
        let a = allocate(&[Some(0.2), Some(0.6)], 7, bounds(3, 5, 4));
        assert_eq!(a.sizes, [4, 3]);
        assert!((a.objective - 0.144_486_4).abs() < 1e-12, "{a:?}");
    }

    /// p = ½, p = 0, p = 1, unseen; group_size 4, n_min 2, n_max 4, budget 20: minimums
    /// 2 + 2 + 2 + 4 = 10, the knapsack takes 2 (p = ½ to n_max 4), the 8 left go to the one
    /// p = 0 prompt.
    #[test]
    fn leftover_goes_to_hard_prompts_then_to_all() {
        let a = allocate(&[Some(0.5), Some(0.0), Some(1.0), None], 20, B);
        assert_eq!(a.sizes, [4, 10, 2, 4]);
        assert_eq!(a.leftover, 8);
        // Two hard prompts: minimums 6, the knapsack takes 2, the 7 left split 4/3 in order.
        let a = allocate(&[Some(0.0), Some(0.5), Some(0.0)], 15, B);
        assert_eq!(a.sizes, [6, 4, 5]);
        // No hard prompt: the 5 left over go round-robin to every prompt.
        let a = allocate(&[Some(1.0), Some(0.5), None], 15, B);
        assert_eq!(a.sizes, [4, 6, 5]);
        // No item at all: the same, and the objective is 0.
        let a = allocate(&[None, Some(1.0)], 9, B);
        assert_eq!(
            (a.sizes.as_slice(), a.objective, a.effective),
            ([6, 3].as_slice(), 0.0, 0)
        );
    }

    /// Unseen (minimum 4), p = ½ and p = 0 (minimum 2 each) in a budget of 5: quotas 2.5, 1.25,
    /// 1.25 → floors 2, 1, 1 and the one missing response to the largest remainder (prompt 0).
    #[test]
    fn too_small_a_budget_is_scaled_down_proportionally() {
        let a = allocate(&[None, Some(0.5), Some(0.0)], 5, B);
        assert_eq!(a.sizes, [3, 1, 1]);
        assert!(a.scaled_down);
        // Equal remainders go to the earlier prompt.
        assert_eq!(allocate(&[Some(0.5); 3], 4, B).sizes, [2, 1, 1]);
        assert_eq!(allocate(&[Some(0.5); 3], 0, B).sizes, [0, 0, 0]);
        assert!(allocate(&[], 7, B).sizes.is_empty());
    }

    #[test]
    fn n_max_below_n_min_acts_as_n_min() {
        let a = allocate(&[Some(0.5), Some(0.3), Some(0.0)], 12, bounds(3, 1, 4));
        assert_eq!(a.sizes, [3, 3, 6]);
    }

    /// The bar: on random small cases (≤ 5 prompts, budgets ≤ 16) the allocation sums to the
    /// budget and respects its bounds; taking the fallback's documented shares off, what is
    /// left is the knapsack's part, worth exactly the brute-force optimum.
    #[test]
    fn matches_brute_force_on_small_cases() {
        let mut rng = CounterRng::new(13);
        let (mut compared, mut to_hard, mut to_all, mut scaled) = (0, 0, 0, 0);
        for case in 0..4000 {
            let count = 1 + rng.below(5) as usize;
            let rates = random_rates(&mut rng, count);
            let budget = rng.below(17) as u32;
            let n_min = 1 + rng.below(3) as u32;
            let b = bounds(n_min, n_min + rng.below(6) as u32, 1 + rng.below(4) as u32);
            let a = allocate(&rates, budget, b);
            let ctx = format!("case {case}: {rates:?} budget {budget} {b:?} → {a:?}");
            assert_eq!(a.sizes.len(), count, "{ctx}");
            assert_eq!(a.sizes.iter().sum::<u32>(), budget, "{ctx}");
            assert!(
                (a.objective - worth(&a.sizes, &rates)).abs() < 1e-12,
                "{ctx}"
            );
            let mins: Vec<u32> = rates.iter().map(|&p| min_of(p, b)).collect();
            if mins.iter().sum::<u32>() > budget {
                scaled += 1;
                assert!(a.scaled_down, "{ctx}");
                assert!(a.sizes.iter().zip(&mins).all(|(n, m)| n <= m), "{ctx}");
                continue;
            }
            // Take the fallback's shares off: `leftover` over the p = 0 prompts, else over all,
            // the first `leftover mod k` of them one more.
            let item = |p: &Option<f64>| p.is_some_and(|p| p > 0.0 && p < 1.0);
            let hard: Vec<usize> = (0..count).filter(|&i| rates[i] == Some(0.0)).collect();
            let targets: Vec<usize> = if hard.is_empty() {
                (0..count).collect()
            } else {
                hard
            };
            let (l, k) = (a.leftover as u32, targets.len() as u32);
            let mut knap = a.sizes.clone();
            for (j, &i) in targets.iter().enumerate() {
                let share = l / k + u32::from((j as u32) < l % k);
                assert!(knap[i] >= share, "{ctx}");
                knap[i] -= share;
            }
            for i in 0..count {
                assert!(knap[i] >= mins[i], "{ctx}");
                if item(&rates[i]) {
                    assert!(knap[i] <= b.n_max.max(b.n_min), "{ctx}");
                    // The knapsack leaves budget over only when every item is full.
                    assert!(l == 0 || knap[i] == b.n_max.max(b.n_min), "{ctx}");
                } else {
                    assert_eq!(knap[i], mins[i], "{ctx}");
                }
            }
            let best = brute_force(&rates, budget, b);
            assert!(
                (worth(&knap, &rates) - best).abs() < 1e-12,
                "{ctx}: brute force {best}"
            );
            compared += 1;
            if l > 0 && targets.len() < count {
                to_hard += 1;
            } else if l > 0 {
                to_all += 1;
            }
        }
        // The cases reach every branch.
        assert!(
            compared > 1500 && to_hard > 100 && to_all > 100 && scaled > 100,
            "{compared} {to_hard} {to_all} {scaled}"
        );
    }

    /// The greedy the large cases use agrees with the table on bigger random cases.
    #[test]
    fn greedy_agrees_with_the_dynamic_programme() {
        let mut rng = CounterRng::new(7);
        for case in 0..200 {
            let count = 1 + rng.below(40) as usize;
            let ps: Vec<f64> = (0..count).map(|_| 0.01 + 0.98 * rng.next_f64()).collect();
            let n_min = 1 + rng.below(4) as u32;
            let cap = rng.below(20) as u32;
            let spend = rng.below(count as u64 * u64::from(cap) + 1);
            let width = spend as usize + 1;
            let dp = knapsack_dp(&ps, n_min, cap, width);
            let greedy = knapsack_greedy(&ps, n_min, cap, spend);
            let total =
                |x: &[u32]| -> f64 { x.iter().zip(&ps).map(|(&x, &p)| value(n_min + x, p)).sum() };
            for x in [&dp, &greedy] {
                assert_eq!(
                    x.iter().map(|&x| u64::from(x)).sum::<u64>(),
                    spend,
                    "case {case}"
                );
                assert!(x.iter().all(|&x| x <= cap), "case {case}");
            }
            assert!(
                (total(&dp) - total(&greedy)).abs() < 1e-12,
                "case {case}: dp {dp:?} greedy {greedy:?}"
            );
        }
    }

    /// A problem too big for the table is still answered, exactly summed.
    #[test]
    fn large_problems_use_the_greedy() {
        let rates: Vec<Option<f64>> = (0..20_000)
            .map(|i| Some((i % 9 + 1) as f64 / 10.0))
            .collect();
        let budget = 20_000 * 8;
        let a = allocate(&rates, budget, bounds(2, 32, 8));
        assert_eq!(
            a.sizes.iter().map(|&n| u64::from(n)).sum::<u64>(),
            u64::from(budget)
        );
        assert!(a.sizes.iter().all(|&n| (2..=32).contains(&n)));
        // p = 0.3 (near the peak at ⅓) gets more than p = 0.9.
        assert!(a.sizes[2] > a.sizes[8], "{:?}", &a.sizes[..9]);
    }
}
