//! `CounterRng`: a small, pure, counter-based random number generator plugins seed from
//! `seed()` of a batch view.
//!
//! Counter-based (draw `i` is a hash of `(key, i)`), so a draw depends only on the seed and
//! its index: results do not depend on thread count or on which draws other code made, and
//! the same stream can be re-created anywhere. The hash is SplitMix64's finalizer, which
//! passes BigCrush as a counter-mode generator; it is not cryptographic.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A counter-based generator: `key` fixed by the seed (and stream), `counter` advancing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRng {
    key: u64,
    counter: u64,
}

impl CounterRng {
    /// A generator for `seed` (stream 0).
    pub fn new(seed: u64) -> Self {
        Self::with_stream(seed, 0)
    }

    /// An independent generator for `(seed, stream)`, e.g. one stream per purpose.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        Self {
            key: mix(seed ^ mix(stream.wrapping_add(GOLDEN))),
            counter: 0,
        }
    }

    /// Draw number `index` of this stream, without advancing it.
    pub fn at(&self, index: u64) -> u64 {
        mix(self.key.wrapping_add(index.wrapping_mul(GOLDEN)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let x = self.at(self.counter);
        self.counter = self.counter.wrapping_add(1);
        x
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)`; `n == 0` gives 0. Unbiased (Lemire's method with rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Shuffles `items` uniformly (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `k` distinct indices of `0..n`, uniformly without replacement (all of them if `k ≥ n`),
    /// in selection order; the analogue of `torch.randperm(n)[:k]`.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_stream_separated() {
        let mut a = CounterRng::new(7);
        let mut b = CounterRng::new(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_eq!(CounterRng::new(7).at(2), xs[2]);
        assert_ne!(CounterRng::with_stream(7, 1).at(0), xs[0]);
        assert_ne!(CounterRng::new(8).at(0), xs[0]);
    }

    #[test]
    fn below_and_sampling_are_in_range_and_roughly_uniform() {
        let mut r = CounterRng::new(1);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[r.below(5) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let s = r.sample_indices(10, 4);
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|&i| i < 10));
        let mut sorted = s.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert_eq!(r.sample_indices(3, 9).len(), 3);
        let x = r.next_f64();
        assert!((0.0..1.0).contains(&x));
    }
}
