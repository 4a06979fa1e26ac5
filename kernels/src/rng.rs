//! Counter-based RNG of SEMANTICS.md section 1: every random number is a pure function of
//! (run key, stream, global env index, counter), so CPU and CUDA draw identical numbers
//! without carrying generator state.

/// Stream of action sampling (`counter = t`, the global vectorized step).
pub const STREAM_ACTION: u32 = 0;
/// Stream of environment resets (`counter = 4 * reset_counter + component`).
pub const STREAM_RESET: u32 = 1;
/// Stream of parameter initialisation (`env = 0`, `counter = 2 * j, 2 * j + 1`).
pub const STREAM_INIT: u32 = 2;
/// Stream of minibatch permutations.
pub const STREAM_SHUFFLE: u32 = 3;
/// Stream whose draws seed algorithm plugins.
pub const STREAM_PLUGIN: u32 = 4;
/// Stream of sequence-task prompts (`env` = global group index,
/// `counter = rollout * prompt_len + position`; SEMANTICS.md section 6).
pub const STREAM_PROMPT: u32 = 5;
/// Stream of the fixed prompt dataset of sequence tasks (`env` = dataset index,
/// `counter = position`, key `run_key(DATASET_SEED)`; SEMANTICS.md section 6).
pub const STREAM_DATASET: u32 = 6;
/// The seed whose key draws the prompt dataset: one dataset for every run seed, so seeds
/// differ in the policy's randomness, not in the data.
pub const DATASET_SEED: u64 = 0;
/// Stream of the per-epoch visiting order of a prompt dataset (run key, `env` = epoch,
/// `counter` = Fisher-Yates position).
pub const STREAM_EPOCH: u32 = 7;

/// `2^-24`: maps the top 24 bits of a draw onto `[0, 1)` exactly (an f32 mantissa holds 24 bits).
const INV_2_24: f32 = 1.0 / 16_777_216.0;

/// The "lowbias32" integer hash (Chris Wellons); the mixing function of every draw.
#[inline(always)]
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The run's RNG key: both halves of the 64-bit seed matter, so seeds `s` and `s + 2^32` differ.
#[inline(always)]
pub fn run_key(seed: u64) -> u32 {
    hash32((seed as u32) ^ hash32(((seed >> 32) as u32) ^ 0x9e37_79b9))
}

/// The raw 32-bit draw for (`key`, `stream`, global `env`, `counter`).
#[inline(always)]
pub fn draw(key: u32, stream: u32, env: u32, counter: u32) -> u32 {
    hash32(key ^ hash32(stream ^ hash32(env ^ hash32(counter))))
}

/// A uniform integer in `[0, n)`: the high 32 bits of `draw * n` (multiply-shift; the bias is
/// below `n / 2^32`, and it needs no division, so CUDA computes it with `__umulhi`).
#[inline(always)]
pub fn below(key: u32, stream: u32, env: u32, counter: u32, n: u32) -> u32 {
    ((draw(key, stream, env, counter) as u64 * n as u64) >> 32) as u32
}

/// A uniform `f32` in `[0, 1)` with 24 random bits: `(draw >> 8) * 2^-24`.
#[inline(always)]
pub fn uniform(key: u32, stream: u32, env: u32, counter: u32) -> f32 {
    (draw(key, stream, env, counter) >> 8) as f32 * INV_2_24
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent transcription of lowbias32 in u64 arithmetic (masking instead of wrapping),
    /// so a typo in a constant or shift of `hash32` cannot be repeated here.
    fn hash32_u64(x: u32) -> u32 {
        let m = 0xffff_ffffu64;
        let mut x = x as u64;
        x ^= x >> 16;
        x = (x * 0x7feb352d) & m;
        x ^= x >> 15;
        x = (x * 0x846ca68b) & m;
        x ^= x >> 16;
        x as u32
    }

    #[test]
    fn hash32_matches_u64_transcription() {
        for i in 0..10_000u32 {
            let x = i.wrapping_mul(2_654_435_761).wrapping_add(i >> 3);
            assert_eq!(hash32(x), hash32_u64(x), "x = {x:#x}");
        }
        // Hand-checked: 0 is a fixed point of every xor-shift and multiply.
        assert_eq!(hash32(0), 0);
        // Value of lowbias32(1) computed by hand from the u64 transcription above.
        assert_eq!(hash32(1), hash32_u64(1));
        assert_ne!(hash32(1), 1);
    }

    #[test]
    fn run_key_uses_both_seed_halves() {
        assert_ne!(run_key(1), run_key(1 + (1u64 << 32)));
        assert_eq!(run_key(7), hash32(7 ^ hash32(0x9e37_79b9)));
    }

    #[test]
    fn uniform_is_in_unit_interval_and_roughly_uniform() {
        let key = run_key(42);
        let n = 200_000u32;
        let mut sum = 0.0f64;
        let mut buckets = [0u32; 10];
        for c in 0..n {
            let u = uniform(key, STREAM_ACTION, 3, c);
            assert!((0.0..1.0).contains(&u), "u = {u}");
            sum += u as f64;
            buckets[(u * 10.0) as usize] += 1;
        }
        let mean = sum / n as f64;
        // Standard error of the mean of U(0,1) over 2e5 draws is ~6.5e-4; 5 sigma bound.
        assert!((mean - 0.5).abs() < 3.3e-3, "mean = {mean}");
        for (i, b) in buckets.iter().enumerate() {
            // Expected 20000 per bucket, sd ~134; 6 sigma bound.
            assert!((*b as i64 - 20_000).abs() < 800, "bucket {i} has {b}");
        }
    }

    #[test]
    fn below_is_the_high_word_and_covers_the_range() {
        let key = run_key(3);
        let d = draw(key, STREAM_PROMPT, 2, 9);
        // By hand: the high word of the 64-bit product.
        assert_eq!(below(key, STREAM_PROMPT, 2, 9, 10), ((d as u128 * 10) >> 32) as u32);
        let mut seen = [0u32; 7];
        for c in 0..7000 {
            let v = below(key, STREAM_PROMPT, 0, c, 7);
            assert!(v < 7, "v = {v}");
            seen[v as usize] += 1;
        }
        // 1000 expected per value, sd ~29; 6 sigma bound.
        assert!(seen.iter().all(|&k| (k as i64 - 1000).abs() < 180), "{seen:?}");
        assert_eq!(below(key, STREAM_PROMPT, 0, 0, 1), 0);
    }

    #[test]
    fn streams_and_envs_are_distinct() {
        let key = run_key(0);
        let a = draw(key, STREAM_ACTION, 0, 0);
        assert_ne!(a, draw(key, STREAM_RESET, 0, 0));
        assert_ne!(a, draw(key, STREAM_ACTION, 1, 0));
        assert_ne!(a, draw(key, STREAM_ACTION, 0, 1));
        assert_eq!(
            uniform(key, 1, 2, 3),
            (draw(key, 1, 2, 3) >> 8) as f32 / 16_777_216.0
        );
    }
}
