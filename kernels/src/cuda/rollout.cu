// Fused rollout (SEMANTICS.md sections 1-3): env step + policy forward + sampling + bookkeeping,
// many steps per launch, env state in registers for the whole launch. One warp owns 32 envs;
// the block shares one copy of the weights in shared memory. Needs prelude, common.cu, policy.cu.

static_assert(OBS_DIM == 4, "CartPole observations have 4 features");

__device__ __forceinline__ void write_obs(float* obs_s, const CartPole& st, int lane) {
    obs_s[0 * 32 + lane] = st.x;
    obs_s[1 * 32 + lane] = st.x_dot;
    obs_s[2 * 32 + lane] = st.theta;
    obs_s[3 * 32 + lane] = st.theta_dot;
}

// Env state, structure of arrays [n]. ep_ret: return of the running episode.
struct EnvState {
    float* x; float* x_dot; float* theta; float* theta_dot; u32* steps; float* ep_ret;
};

// mode bit 0 (STORE): write the per-step training arrays and the finished-episode list;
//   otherwise (inference benchmark) only count episodes into ep_stats.
// mode bit 1 (CRITIC): run the critic (always with STORE).
#define MODE_STORE 1
#define MODE_CRITIC 2

extern "C" __global__ void __launch_bounds__(256)
rollout(const float* __restrict__ params,
        float* sx, float* sxd, float* sth, float* sthd, u32* ssteps, float* sret,
        int n_envs, u32 env_offset, u32 key, u64 t0, int n_steps, int mode,
        float4* obs_out, u32* actions, float* logp, float* ent, float* values, float* rewards,
        u8* term_out, u8* trunc_out, float* next_values,
        u32* fin_count, u32* fin_key, float* fin_ret, u32* fin_len,
        double* ep_stats) {
    extern __shared__ __align__(16) float smem[];
    load_forward_weights(params, smem);
    __syncthreads();
    const float* w_actor = smem;
    const float* w_critic = smem + FW_ACTOR_FLOATS;
    const int lane = threadIdx.x & 31;
    const int wib = threadIdx.x >> 5;
    float* obs_s = smem + FW_FLOATS + wib * WARP_FLOATS;
    float* buf_a = obs_s + OBS_DIM * 32;
    float* buf_b = buf_a + MAXR * 32;
    const long long warp_id = (long long)blockIdx.x * (blockDim.x >> 5) + wib;
    if (warp_id * 32 >= n_envs) return;  // whole warp: no __syncwarp is skipped by a subset
    const int i = (int)(warp_id * 32) + lane;
    const bool active = i < n_envs;
    const u32 genv = env_offset + (u32)i;
    const bool store = (mode & MODE_STORE) != 0;
    const bool critic = (mode & MODE_CRITIC) != 0;

    CartPole st;
    float ep_ret = 0.0f;
    if (active) {
        st.x = sx[i]; st.x_dot = sxd[i]; st.theta = sth[i]; st.theta_dot = sthd[i];
        st.steps = ssteps[i]; ep_ret = sret[i];
    } else {
        st.x = 0.0f; st.x_dot = 0.0f; st.theta = 0.0f; st.theta_dot = 0.0f; st.steps = 0u;
    }
    write_obs(obs_s, st, lane);
    __syncwarp();
    float logits[N_ACT];
    float value = 0.0f;
    net_forward<N_ACT>(w_actor, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, logits);
    if (critic) net_forward<1>(w_critic, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, &value);

    double episodes = 0.0, return_sum = 0.0;
    for (int t = 0; t < n_steps; ++t) {
        const u64 tg = t0 + (u64)t;
        float lp[N_ACT];
        log_softmax(logits, lp);
        const u32 a = sample_action(lp, uniform01(key, STREAM_ACTION, genv, (u32)tg));
        const long long idx = (long long)t * n_envs + i;
        if (store && active) {
            obs_out[idx] = make_float4(st.x, st.x_dot, st.theta, st.theta_dot);
            actions[idx] = a;
            logp[idx] = lp[a];
            ent[idx] = entropy_of(lp);
            values[idx] = value;
        }
        const u32 flags = cartpole_step(&st, a);
        const bool terminated = (flags & 1u) != 0u;
        const bool truncated = (flags & 2u) != 0u;
        ep_ret = ep_ret + 1.0f;
        // V(final obs) of a truncation: one more critic pass when any lane of the warp truncated.
        float v_final = 0.0f;
        if (critic && __any_sync(FULL_MASK, truncated && active)) {
            write_obs(obs_s, st, lane);
            __syncwarp();
            net_forward<1>(w_critic, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, &v_final);
        }
        if (terminated || truncated) {
            if (active) {
                if (store) {
                    const u32 k = atomicAdd(fin_count, 1u);
                    fin_key[k] = (u32)idx;
                    fin_ret[k] = ep_ret;
                    fin_len[k] = st.steps;
                } else {
                    episodes += 1.0;
                    return_sum += (double)ep_ret;
                }
            }
            ep_ret = 0.0f;
            cartpole_reset(&st, key, genv, (u32)(tg + 1u));
        }
        write_obs(obs_s, st, lane);
        __syncwarp();
        // The actor output of the state after the last step is not needed in this launch.
        if (t + 1 < n_steps)
            net_forward<N_ACT>(w_actor, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, logits);
        float v_next = 0.0f;
        if (critic) net_forward<1>(w_critic, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, &v_next);
        if (store && active) {
            rewards[idx] = 1.0f;
            term_out[idx] = terminated ? 1 : 0;
            trunc_out[idx] = truncated ? 1 : 0;
            next_values[idx] = terminated ? 0.0f : (truncated ? v_final : v_next);
        }
        value = v_next;
    }
    if (active) {
        sx[i] = st.x; sxd[i] = st.x_dot; sth[i] = st.theta; sthd[i] = st.theta_dot;
        ssteps[i] = st.steps; sret[i] = ep_ret;
        if (!store && episodes > 0.0) {
            atomicAdd(&ep_stats[0], episodes);
            atomicAdd(&ep_stats[1], return_sum);
        }
    }
}

// Resets every env with reset counter `counter` (engine creation uses 0).
extern "C" __global__ void env_reset_all(float* sx, float* sxd, float* sth, float* sthd, u32* ssteps,
                                         float* sret, int n_envs, u32 env_offset, u32 key, u32 counter) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_envs) return;
    CartPole st;
    cartpole_reset(&st, key, env_offset + (u32)i, counter);
    sx[i] = st.x; sxd[i] = st.x_dot; sth[i] = st.theta; sthd[i] = st.theta_dot;
    ssteps[i] = 0u; sret[i] = 0.0f;
}

// One vectorized step with given actions (tests, scripted control): post-step state to
// final_obs [n][4], same-step autoreset with counter t + 1, the next observation to obs [n][4].
extern "C" __global__ void env_step_actions(float* sx, float* sxd, float* sth, float* sthd, u32* ssteps,
                                            float* sret, int n_envs, u32 env_offset, u32 key, u64 t,
                                            const u32* actions, float4* obs, float4* final_obs,
                                            float* rewards, u8* term_out, u8* trunc_out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_envs) return;
    CartPole st;
    st.x = sx[i]; st.x_dot = sxd[i]; st.theta = sth[i]; st.theta_dot = sthd[i]; st.steps = ssteps[i];
    const u32 flags = cartpole_step(&st, actions[i]);
    float ep_ret = sret[i] + 1.0f;
    final_obs[i] = make_float4(st.x, st.x_dot, st.theta, st.theta_dot);
    if (flags != 0u) {
        cartpole_reset(&st, key, env_offset + (u32)i, (u32)(t + 1u));
        ep_ret = 0.0f;
    }
    obs[i] = make_float4(st.x, st.x_dot, st.theta, st.theta_dot);
    rewards[i] = 1.0f;
    term_out[i] = (flags & 1u) ? 1 : 0;
    trunc_out[i] = (flags & 2u) ? 1 : 0;
    sx[i] = st.x; sxd[i] = st.x_dot; sth[i] = st.theta; sthd[i] = st.theta_dot;
    ssteps[i] = st.steps; sret[i] = ep_ret;
}
