//! Offsets of every layer inside the flat parameter buffer (SEMANTICS.md section 3), shared by
//! the reference, the CPU engine and the CUDA engine so all three index the same bytes.

use crate::{EngineConfig, KernelError, NetShape};

/// One dense layer `fan_in -> fan_out` inside the flat buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLayout {
    /// Input width.
    pub fan_in: usize,
    /// Output width.
    pub fan_out: usize,
    /// Offset of the row-major `[fan_in][fan_out]` weight matrix.
    pub weight: usize,
    /// Offset of the `[fan_out]` bias vector (right after the weights).
    pub bias: usize,
}

impl LayerLayout {
    /// Parameters of this layer (weights and bias).
    pub fn len(&self) -> usize {
        self.fan_in * self.fan_out + self.fan_out
    }

    /// Always false: a validated layer has at least one weight. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where every actor and critic layer lives in the flat buffer: actor layers in order, then
/// critic layers, each as `W` (row-major `[in][out]`) followed by `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    /// The shape this layout was built from.
    pub shape: NetShape,
    /// Actor layers `obs -> h1 -> ... -> n_actions`.
    pub actor: Vec<LayerLayout>,
    /// Critic layers `obs -> h1 -> ... -> 1`.
    pub critic: Vec<LayerLayout>,
    /// Total parameters (length of the flat buffer).
    pub num_params: usize,
}

impl ParamLayout {
    /// Builds the layout; rejects zero widths and sizes whose parameter count overflows.
    pub fn new(shape: &NetShape) -> Result<Self, KernelError> {
        if shape.obs_dim == 0 {
            return Err(KernelError::InvalidConfig(
                "obs_dim must be at least 1".into(),
            ));
        }
        if shape.n_actions == 0 {
            return Err(KernelError::InvalidConfig(
                "n_actions must be at least 1".into(),
            ));
        }
        if let Some(i) = shape.hidden.iter().position(|&h| h == 0) {
            return Err(KernelError::InvalidConfig(format!(
                "hidden layer {i} has width 0"
            )));
        }
        let overflow = || KernelError::InvalidConfig(format!("network {shape:?} is too large"));
        let mut offset = 0usize;
        let mut build = |out_dim: usize| -> Result<Vec<LayerLayout>, KernelError> {
            let mut dims = Vec::with_capacity(shape.hidden.len() + 2);
            dims.push(shape.obs_dim);
            dims.extend_from_slice(&shape.hidden);
            dims.push(out_dim);
            let mut layers = Vec::with_capacity(dims.len() - 1);
            for w in dims.windows(2) {
                let (fan_in, fan_out) = (w[0], w[1]);
                let weight = offset;
                let bias = fan_in
                    .checked_mul(fan_out)
                    .and_then(|n| weight.checked_add(n))
                    .ok_or_else(overflow)?;
                offset = bias.checked_add(fan_out).ok_or_else(overflow)?;
                layers.push(LayerLayout {
                    fan_in,
                    fan_out,
                    weight,
                    bias,
                });
            }
            Ok(layers)
        };
        let actor = build(shape.n_actions)?;
        let critic = build(1)?;
        // Engines index the buffer with u32 on the GPU; keep every offset representable.
        if offset > u32::MAX as usize {
            return Err(overflow());
        }
        Ok(Self {
            shape: shape.clone(),
            actor,
            critic,
            num_params: offset,
        })
    }

    /// Widest layer input or output (sizes per-row scratch buffers).
    pub fn max_width(&self) -> usize {
        self.actor
            .iter()
            .chain(&self.critic)
            .map(|l| l.fan_in.max(l.fan_out))
            .max()
            .unwrap_or(0)
    }
}

/// Checks everything a CartPole engine needs from `cfg` (CartPole sizes, then
/// [`validate_sizes`]) and returns the parameter layout. Every CartPole engine calls this first.
pub fn validate_config(cfg: &EngineConfig) -> Result<ParamLayout, KernelError> {
    let layout = ParamLayout::new(&cfg.shape)?;
    if cfg.shape.obs_dim != 4 || cfg.shape.n_actions != 2 {
        return Err(KernelError::InvalidConfig(format!(
            "CartPole needs obs_dim 4 and n_actions 2, got {} and {}",
            cfg.shape.obs_dim, cfg.shape.n_actions
        )));
    }
    validate_sizes(cfg)?;
    Ok(layout)
}

/// The environment-independent checks of `cfg` (counts that index with u32, Adam settings),
/// shared by the CartPole engines and the sequence engine (`seq`), which check their own
/// observation and action sizes first.
pub fn validate_sizes(cfg: &EngineConfig) -> Result<(), KernelError> {
    let bad = |m: String| Err(KernelError::InvalidConfig(m));
    if cfg.num_envs == 0 || cfg.num_steps == 0 {
        return bad(format!(
            "num_envs ({}) and num_steps ({}) must be >= 1",
            cfg.num_envs, cfg.num_steps
        ));
    }
    // Samples are addressed as u32 `t * num_envs + env`; global env indices feed the u32 RNG.
    match cfg.num_envs.checked_mul(cfg.num_steps) {
        Some(n) if n <= u32::MAX as usize && n.checked_mul(cfg.shape.obs_dim).is_some() => {}
        _ => {
            return bad(format!(
                "num_envs * num_steps = {} x {} exceeds 2^32",
                cfg.num_envs, cfg.num_steps
            ))
        }
    }
    match cfg.env_offset.checked_add(cfg.num_envs) {
        Some(end) if end <= 1usize << 32 => {}
        _ => {
            return bad(format!(
                "env_offset {} + num_envs {} exceeds 2^32",
                cfg.env_offset, cfg.num_envs
            ))
        }
    }
    let a = cfg.adam;
    let beta_ok = |b: f32| (0.0..1.0).contains(&b);
    if !(beta_ok(a.beta1) && beta_ok(a.beta2) && a.eps > 0.0 && a.eps.is_finite()) {
        return bad(format!("Adam needs 0 <= beta < 1 and eps > 0, got {a:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_4_64_64_2_by_hand() {
        let shape = NetShape {
            obs_dim: 4,
            hidden: vec![64, 64],
            n_actions: 2,
        };
        let l = ParamLayout::new(&shape).expect("valid shape");
        // actor: 4*64+64 = 320, 64*64+64 = 4160, 64*2+2 = 130 -> 4610; critic: 320+4160+65.
        assert_eq!(
            l.actor[0],
            LayerLayout {
                fan_in: 4,
                fan_out: 64,
                weight: 0,
                bias: 256
            }
        );
        assert_eq!(l.actor[1].weight, 320);
        assert_eq!(
            l.actor[2],
            LayerLayout {
                fan_in: 64,
                fan_out: 2,
                weight: 4480,
                bias: 4608
            }
        );
        assert_eq!(l.critic[0].weight, 4610);
        assert_eq!(
            l.critic[2],
            LayerLayout {
                fan_in: 64,
                fan_out: 1,
                weight: 9090,
                bias: 9154
            }
        );
        assert_eq!(l.num_params, 4610 + 4545);
        assert_eq!(l.max_width(), 64);
    }

    #[test]
    fn rejects_zero_widths_and_overflow() {
        let bad = |obs_dim, hidden: Vec<usize>, n_actions| {
            ParamLayout::new(&NetShape {
                obs_dim,
                hidden,
                n_actions,
            })
            .is_err()
        };
        assert!(bad(0, vec![8], 2));
        assert!(bad(4, vec![8], 0));
        assert!(bad(4, vec![8, 0], 2));
        assert!(bad(4, vec![usize::MAX / 2, usize::MAX / 2], 2));
        assert!(bad(4, vec![1 << 20, 1 << 20], 2));
        // No hidden layers is a linear policy, which is allowed.
        assert!(!bad(4, vec![], 2));
    }
}
