//! Hand-computed and finite-difference checks of the reference transcription.

use super::*;
use crate::NetShape;

fn close(a: f32, b: f64, tol: f64) -> bool {
    (a as f64 - b).abs() <= tol
}

#[test]
fn cartpole_step_from_rest_by_hand() {
    // From the upright rest state with a push right: s = 0, c = 1, temp = 100/11,
    // theta_acc = -(100/11) / (0.5 * (4/3 - 1/11)) = -600/41, x_acc = 400/41.
    let mut s = [0.0f32; 4];
    let mut steps = 0;
    let (r, term, trunc) = cartpole_step(&mut s, &mut steps, 1);
    assert_eq!((r, term, trunc, steps), (1.0, false, false, 1));
    assert_eq!(s[0], 0.0);
    assert!(close(s[1], 0.02 * 400.0 / 41.0, 1e-6), "x_dot {}", s[1]);
    assert_eq!(s[2], 0.0);
    assert!(
        close(s[3], -0.02 * 600.0 / 41.0, 1e-6),
        "theta_dot {}",
        s[3]
    );
    // Pushing left mirrors it.
    let mut m = [0.0f32; 4];
    cartpole_step(&mut m, &mut steps, 0);
    assert_eq!(m, [-s[0], -s[1], -s[2], -s[3]]);
}

/// The same equations in f64 with libm sin/cos, for an arbitrary state.
fn step_f64(s: [f64; 4], a: u32) -> [f64; 4] {
    let [x, xd, th, thd] = s;
    let force = if a == 1 { 10.0 } else { -10.0 };
    let (sn, cs) = th.sin_cos();
    let temp = (force + 0.05 * thd * thd * sn) / 1.1;
    let th_acc = (9.8 * sn - cs * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cs * cs / 1.1));
    let x_acc = temp - 0.05 * th_acc * cs / 1.1;
    [
        x + 0.02 * xd,
        xd + 0.02 * x_acc,
        th + 0.02 * thd,
        thd + 0.02 * th_acc,
    ]
}

#[test]
fn cartpole_step_matches_f64_equations() {
    let states = [
        [0.01f32, -0.3, 0.15, 1.2],
        [-2.0, 1.5, -0.2, -2.5],
        [0.5, 0.0, 0.05, 0.0],
    ];
    for st in states {
        for a in 0..2 {
            let mut s = st;
            let mut steps = 7;
            cartpole_step(&mut s, &mut steps, a);
            let want = step_f64(st.map(|v| v as f64), a);
            for k in 0..4 {
                // f32 rounding of ~10 operations on O(10) intermediates, times tau.
                assert!(
                    close(s[k], want[k], 2e-6),
                    "state {st:?} a {a} k {k}: {} vs {}",
                    s[k],
                    want[k]
                );
            }
        }
    }
}

#[test]
fn cartpole_termination_and_truncation() {
    // theta just below the threshold and rotating outward: terminates.
    let mut s = [0.0, 0.0, 0.2094, 0.5];
    let mut steps = 3;
    let (_, term, trunc) = cartpole_step(&mut s, &mut steps, 1);
    assert!(term && !trunc);
    // x beyond -2.4 after the move.
    let mut s = [-2.399, -1.0, 0.0, 0.0];
    assert!(cartpole_step(&mut s, &mut steps, 0).1);
    // The 500th step of a surviving episode truncates; a terminating 500th step does not.
    let mut s = [0.0; 4];
    let mut steps = 499;
    assert_eq!(cartpole_step(&mut s, &mut steps, 1), (1.0, false, true));
    let mut s = [0.0, 0.0, 0.2094, 0.5];
    let mut steps = 499;
    assert_eq!(cartpole_step(&mut s, &mut steps, 1), (1.0, true, false));
    assert_eq!(
        cartpole::THETA_THRESHOLD,
        (12.0 * 2.0 * core::f64::consts::PI / 360.0) as f32
    );
}

#[test]
fn cartpole_reset_uses_reset_stream() {
    let key = crate::rng::run_key(3);
    let s = cartpole_reset(key, 5, 2);
    for (k, v) in s.iter().enumerate() {
        let u = uniform(key, STREAM_RESET, 5, 8 + k as u32);
        assert_eq!(*v, u * 0.1 - 0.05);
        assert!((-0.05..0.05).contains(v));
    }
    assert_ne!(s, cartpole_reset(key, 5, 3));
    assert_ne!(s, cartpole_reset(key, 6, 2));
}

fn tiny_layout() -> ParamLayout {
    ParamLayout::new(&NetShape {
        obs_dim: 1,
        hidden: vec![1],
        n_actions: 2,
    })
    .expect("shape")
}

#[test]
fn forward_of_one_hidden_unit_by_hand() {
    let l = tiny_layout();
    // actor: W0 = [2], b0 = [0.5], W1 = [1, -1], b1 = [0.1, 0.2];
    // critic: W0 = [-1], b0 = [0], W1 = [3], b1 = [0.25].
    let p = vec![2.0, 0.5, 1.0, -1.0, 0.1, 0.2, -1.0, 0.0, 3.0, 0.25];
    assert_eq!(l.num_params, p.len());
    let (logits, v) = forward(&l, &p, &[0.25]);
    let h = (2.0f64 * 0.25 + 0.5).tanh(); // tanh(1)
    assert!(
        close(logits[0], h + 0.1, 3e-6) && close(logits[1], -h + 0.2, 3e-6),
        "{logits:?}"
    );
    assert!(close(v, 3.0 * (-0.25f64).tanh() + 0.25, 1e-5), "{v}");
    let lp = log_softmax(&logits);
    let (z0, z1) = (h + 0.1, -h + 0.2);
    let lse = (z0.exp() + z1.exp()).ln();
    assert!(close(lp[0], z0 - lse, 3e-6) && close(lp[1], z1 - lse, 3e-6));
    let (p0, p1) = ((z0 - lse).exp(), (z1 - lse).exp());
    assert!(close(
        entropy(&lp),
        -(p0 * (z0 - lse) + p1 * (z1 - lse)),
        3e-6
    ));
    // Sampling: p0 ~ 0.8488, so u just below picks 0 and just above picks 1.
    assert_eq!(sample(&lp, (p0 - 1e-4) as f32), 0);
    assert_eq!(sample(&lp, (p0 + 1e-4) as f32), 1);
    // No cumulative sum exceeds u: the last action.
    assert_eq!(sample(&[-10.0, -10.0], 0.5), 1);
}

/// Hand case: an action of probability 0 (`logp = -inf`, a logit gap beyond f32) adds 0 to
/// the entropy and to dL/dlogit; a NaN logp still propagates.
#[test]
fn an_action_of_probability_zero_adds_nothing_to_the_entropy() {
    let lp = [0.0, f32::NEG_INFINITY];
    assert_eq!(entropy(&lp), 0.0);
    assert_eq!(d_logits(&lp, 0, 1.0, -0.01), vec![0.0, 0.0]);
    assert_eq!(d_logits(&lp, 1, 1.0, -0.01), vec![-1.0, 1.0], "the taken action's d_logp term stays");
    assert!(entropy(&[f32::NAN, -1.0]).is_nan());
    // An ordinary case is unchanged: -(0.5 ln 0.5) * 2 = ln 2.
    assert!((entropy(&[0.5f32.ln(), 0.5f32.ln()]) - std::f32::consts::LN_2).abs() < 1e-7);
}

/// Independent f64 forward + loss `d_logp*logp[a] + d_value*V + d_entropy*H`, with libm tanh.
fn loss_f64(l: &ParamLayout, p: &[f64], obs: &[f64], a: usize, d: (f64, f64, f64)) -> f64 {
    let run = |layers: &[LayerLayout]| {
        let mut x = obs.to_vec();
        for (i, ly) in layers.iter().enumerate() {
            let mut y: Vec<f64> = (0..ly.fan_out)
                .map(|j| {
                    p[ly.bias + j]
                        + (0..ly.fan_in)
                            .map(|k| x[k] * p[ly.weight + k * ly.fan_out + j])
                            .sum::<f64>()
                })
                .collect();
            if i + 1 < layers.len() {
                y.iter_mut().for_each(|v| *v = v.tanh());
            }
            x = y;
        }
        x
    };
    let z = run(&l.actor);
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    let lp: Vec<f64> = z.iter().map(|v| v - lse).collect();
    let h = -lp.iter().map(|v| v.exp() * v).sum::<f64>();
    d.0 * lp[a] + d.1 * run(&l.critic)[0] + d.2 * h
}

#[test]
fn backward_matches_finite_differences() {
    let l = ParamLayout::new(&NetShape {
        obs_dim: 4,
        hidden: vec![5, 3],
        n_actions: 3,
    })
    .expect("shape");
    let key = crate::rng::run_key(11);
    let mut p = init_params(&l, key);
    // Non-zero biases and a larger actor head so every term matters.
    for (i, v) in p.iter_mut().enumerate() {
        *v += 0.3 * (uniform(key, 9, 0, i as u32) - 0.5);
    }
    let obs = [0.03f32, -0.4, 0.12, 0.9];
    let d = (-0.7f32, 0.35f32, 0.05f32);
    for a in 0..3u32 {
        let mut g = vec![0.0f32; l.num_params];
        backward(&l, &p, &obs, a, d.0, d.1, d.2, &mut g);
        let p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
        let o64 = obs.map(|v| v as f64);
        let d64 = (d.0 as f64, d.1 as f64, d.2 as f64);
        for i in 0..l.num_params {
            let h = 1e-6;
            let (mut pp, mut pm) = (p64.clone(), p64.clone());
            pp[i] += h;
            pm[i] -= h;
            let fd = (loss_f64(&l, &pp, &o64, a as usize, d64)
                - loss_f64(&l, &pm, &o64, a as usize, d64))
                / (2.0 * h);
            // tanh's approximation (2e-6 abs) and f32 rounding bound the difference.
            let tol = 2e-5 + 1e-4 * fd.abs();
            assert!(
                close(g[i], fd, tol),
                "action {a} param {i}: backward {} vs fd {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn init_is_scaled_orthogonal_with_zero_bias() {
    let l = ParamLayout::new(&NetShape {
        obs_dim: 4,
        hidden: vec![16, 8],
        n_actions: 2,
    })
    .expect("shape");
    let p = init_params(&l, crate::rng::run_key(5));
    assert_eq!(p, init_params(&l, crate::rng::run_key(5)));
    assert_ne!(p, init_params(&l, crate::rng::run_key(6)));
    let gains = [
        2f64.sqrt(),
        2f64.sqrt(),
        0.01,
        2f64.sqrt(),
        2f64.sqrt(),
        1.0,
    ];
    for (ly, gain) in l.actor.iter().chain(&l.critic).zip(gains) {
        let w = |i: usize, o: usize| p[ly.weight + i * ly.fan_out + o] as f64;
        // The shorter side is orthonormal: columns when fan_in >= fan_out, else rows.
        let (short, long) = (ly.fan_in.min(ly.fan_out), ly.fan_in.max(ly.fan_out));
        for a in 0..short {
            for b in 0..short {
                let dot: f64 = (0..long)
                    .map(|k| {
                        if ly.fan_in >= ly.fan_out {
                            w(k, a) * w(k, b)
                        } else {
                            w(a, k) * w(b, k)
                        }
                    })
                    .sum();
                let want = if a == b { gain * gain } else { 0.0 };
                assert!(
                    (dot - want).abs() < 1e-5 * gain * gain + 1e-9,
                    "{ly:?} ({a},{b}) {dot}"
                );
            }
        }
        assert!(p[ly.bias..ly.bias + ly.fan_out].iter().all(|&b| b == 0.0));
    }
    // The first weight is the first Gaussian times sqrt(2) divided by its column norm.
    assert!(
        p[0] != 0.0 && init_gaussian(crate::rng::run_key(5), 0).signum() == p[0].signum() as f64
    );
}

#[test]
fn gaussians_have_unit_variance() {
    let key = crate::rng::run_key(1);
    let n = 100_000;
    let (mut s1, mut s2) = (0.0, 0.0);
    for j in 0..n {
        let g = init_gaussian(key, j);
        assert!(g.is_finite());
        s1 += g;
        s2 += g * g;
    }
    let mean = s1 / n as f64;
    let var = s2 / n as f64 - mean * mean;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
        "mean {mean} var {var}"
    );
}

#[test]
fn clip_grad_norm_by_hand() {
    let mut g = vec![3.0f32, 4.0];
    let norm = clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0);
    assert!(close(g[0], 3.0 / (5.0 + 1e-6), 1e-7) && close(g[1], 4.0 / (5.0 + 1e-6), 1e-7));
    let mut g = vec![0.3f32, 0.4];
    assert!(close(clip_grad_norm(&mut g, 1.0), 0.5, 1e-7));
    assert_eq!(g, vec![0.3, 0.4]);
}

#[test]
fn adam_first_two_steps_by_hand() {
    let cfg = AdamConfig::default();
    let mut p = vec![1.0f32, -2.0];
    let mut m = vec![0.0; 2];
    let mut v = vec![0.0; 2];
    // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) ~ lr * sign(g).
    adam_step(&mut p, &[0.5, -4.0], &mut m, &mut v, 1, 0.1, &cfg);
    assert!(
        close(p[0], 1.0 - 0.1 * 0.5 / (0.5 + 1e-5), 1e-6),
        "{}",
        p[0]
    );
    assert!(
        close(p[1], -2.0 + 0.1 * 4.0 / (4.0 + 1e-5), 1e-6),
        "{}",
        p[1]
    );
    // Step 2 with g = 0: m = 0.09*0.5... computed in f64.
    let (g1, b1, b2) = (0.5f64, 0.9f64, 0.999f64);
    let m2 = b1 * (1.0 - b1) * g1;
    let v2 = b2 * (1.0 - b2) * g1 * g1;
    let upd = 0.1 * (m2 / (1.0 - b1 * b1)) / ((v2 / (1.0 - b2 * b2)).sqrt() + 1e-5);
    let before = p[0] as f64;
    adam_step(&mut p, &[0.0, 0.0], &mut m, &mut v, 2, 0.1, &cfg);
    assert!(
        close(p[0], before - upd, 1e-6),
        "{} vs {}",
        p[0],
        before - upd
    );
}
