// Sequence tasks (SEMANTICS.md section 6): token-by-token generation of every response in one
// launch, and the one-hot observation rows that evaluate reads. Needs the generated prelude
// (shape constants plus SEQ_P, SEQ_R), common.cu and policy.cu.
//
// Prompts and answers are computed on the host (kernels/src/seq/task.rs) and uploaded: they are
// a few tokens per env, and the host code is the one the CPU engine runs, so they are exact.
// Vocabulary = N_ACT (the policy's actions are tokens).

#define SEQ_V N_ACT
// Feature offsets of the observation: prompt one-hots, response one-hots, position one-hot.
#define SEQ_RESP (SEQ_P * SEQ_V)
#define SEQ_POS ((SEQ_P + SEQ_R) * SEQ_V)
static_assert(OBS_DIM == SEQ_POS + SEQ_R, "sequence observation: (P + R) * V + R features");

// Generates SEQ_R tokens for every env: one warp owns 32 envs, the block shares one copy of the
// weights (as rollout.cu). Per step: forward of actor and critic on the warp's observations
// (kept in shared memory and updated in place), then a draw with counter t0 + t, or the answer's
// token for an expert env; stores token, its logp, the entropy and the value at [t * n + i].
// prompts [n][SEQ_P], answers [n][SEQ_R], expert [n] (0/1).
extern "C" __global__ void __launch_bounds__(256)
seq_rollout(const float* __restrict__ params, const u32* __restrict__ prompts,
            const u32* __restrict__ answers, const u8* __restrict__ expert, int n_envs,
            u32 env_offset, u32 key, u64 t0, u32* actions, float* logp, float* ent, float* values) {
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
    const bool is_expert = active && expert[i] != 0;

    // Observation of step 0: the prompt's one-hots and position 0. An inactive lane (past the
    // last env) computes on a prompt of zeros and stores nothing.
    for (int k = 0; k < OBS_DIM; ++k) obs_s[k * 32 + lane] = 0.0f;
    for (int k = 0; k < SEQ_P; ++k) {
        const u32 tok = active ? prompts[(long long)i * SEQ_P + k] : 0u;
        obs_s[(k * SEQ_V + (int)tok) * 32 + lane] = 1.0f;
    }
    obs_s[SEQ_POS * 32 + lane] = 1.0f;

    for (int t = 0; t < SEQ_R; ++t) {
        __syncwarp();  // this lane's observation writes before the layer that reads every column
        float logits[N_ACT];
        float value;
        net_forward<N_ACT>(w_actor, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, logits);
        net_forward<1>(w_critic, obs_s, buf_a, buf_b, nullptr, nullptr, 0, 0, 0, lane, &value);
        float lp[N_ACT];
        log_softmax(logits, lp);
        // Every env draws its u (section 6: experts' draws go unused), so sampled envs see the
        // same draws whatever the experts are.
        const float u = uniform01(key, STREAM_ACTION, genv, (u32)(t0 + (u64)t));
        const u32 drawn = sample_action(lp, u);
        const u32 a = is_expert ? answers[(long long)i * SEQ_R + t] : drawn;
        if (active) {
            const long long idx = (long long)t * n_envs + i;
            actions[idx] = a;
            // A select chain instead of lp[a]: a dynamic index would put lp in local memory.
            float lpa = lp[0];
#pragma unroll
            for (int b = 1; b < N_ACT; ++b) lpa = (u32)b == a ? lp[b] : lpa;
            logp[idx] = lpa;
            ent[idx] = entropy_of(lp);
            values[idx] = value;
        }
        // net_forward ended with __syncwarp: every lane is done reading the observations.
        obs_s[(SEQ_RESP + t * SEQ_V + (int)a) * 32 + lane] = 1.0f;
        obs_s[(SEQ_POS + t) * 32 + lane] = 0.0f;
        if (t + 1 < SEQ_R) obs_s[(SEQ_POS + t + 1) * 32 + lane] = 1.0f;
    }
}

// The observation rows of every (t, env) of a rollout or a replay: obs[(t * n + i) * OBS_DIM + k]
// (section 6) from prompts [n][SEQ_P] and time-major tokens [t * n + i]. One thread per feature,
// so consecutive threads write consecutive floats.
extern "C" __global__ void seq_build_obs(const u32* __restrict__ prompts, const u32* __restrict__ actions,
                                         int n_envs, float* obs) {
    const u64 total = (u64)n_envs * SEQ_R * OBS_DIM;
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (u64)gridDim.x * blockDim.x) {
        const u64 s = idx / OBS_DIM;
        const int k = (int)(idx - s * OBS_DIM);
        const int t = (int)(s / (u64)n_envs);
        const int i = (int)(s - (u64)t * n_envs);
        bool one;
        if (k < SEQ_RESP) {
            one = prompts[(long long)i * SEQ_P + k / SEQ_V] == (u32)(k % SEQ_V);
        } else if (k < SEQ_POS) {
            const int j = (k - SEQ_RESP) / SEQ_V;
            one = j < t && actions[(long long)j * n_envs + i] == (u32)((k - SEQ_RESP) % SEQ_V);
        } else {
            one = k - SEQ_POS == t;
        }
        obs[idx] = one ? 1.0f : 0.0f;
    }
}
