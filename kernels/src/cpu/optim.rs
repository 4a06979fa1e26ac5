//! Global-norm clipping and Adam over the flat buffers (SEMANTICS.md section 5).

use crate::reference::adam_bias_corrections;
use crate::AdamConfig;

/// L2 norm of `g`, squares summed in f64 over 4 interleaved partial sums (vectorizes; the
/// order differs from the reference's sequential sum only in the last f64 bits).
pub(crate) fn grad_norm(g: &[f32]) -> f32 {
    let mut acc = [0.0f64; 4];
    let mut chunks = g.chunks_exact(4);
    for c in &mut chunks {
        for k in 0..4 {
            acc[k] += c[k] as f64 * c[k] as f64;
        }
    }
    let mut total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for &v in chunks.remainder() {
        total += v as f64 * v as f64;
    }
    total.sqrt() as f32
}

/// Clips `g` when its norm exceeds `max_norm` (PyTorch `clip_grad_norm_`); returns the norm.
pub(crate) fn clip_grad_norm(g: &mut [f32], max_norm: Option<f32>) -> f32 {
    let norm = grad_norm(g);
    if let Some(max) = max_norm {
        if norm > max {
            let coef = max / (norm + 1e-6);
            g.iter_mut().for_each(|v| *v *= coef);
        }
    }
    norm
}

/// Adam step `t` (1-based) then zeroes `g`; same per-element expression as
/// `reference::adam_step`.
pub(crate) fn adam_step_and_zero(
    p: &mut [f32],
    g: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    t: u64,
    lr: f32,
    cfg: &AdamConfig,
) {
    let (bc1, bc2) = adam_bias_corrections(cfg, t);
    let n = p.len();
    let (g, m, v) = (&mut g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let mi = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
        let vi = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi / bc1) / ((vi / bc2).sqrt() + cfg.eps);
        g[i] = 0.0;
    }
}
