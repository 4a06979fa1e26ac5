// Learning step on the GPU (SEMANTICS.md sections 3 and 5): evaluate with cached activations,
// per-sample backward to layer deltas, and the deterministic gradient reduction
// (sum over samples of input x delta, in fixed order). Needs prelude, common.cu, policy.cu.
//
// The activation cache is one buffer of feature-major slots [rows][bp] (bp = minibatch padded
// to a multiple of 32); `slots` holds each slot's element offset (computed by the host).

// Forward of the minibatch: gathers obs, stores every hidden activation and the logits.
// obs_all holds OBS_DIM floats per rollout sample, sample-major (CartPole: the rollout's float4
// per step; sequence tasks: the one-hot rows written by seq_build_obs).
extern "C" __global__ void __launch_bounds__(256)
evaluate_fwd(const float* __restrict__ params, const float* __restrict__ obs_all,
             const u32* __restrict__ actions_all, const u32* __restrict__ samples, int bp,
             float* cache, const u64* __restrict__ slots, u32* act_g,
             float* out_logp, float* out_ent, float* out_value) {
    extern __shared__ __align__(16) float smem[];
    load_forward_weights(params, smem);
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int wib = threadIdx.x >> 5;
    float* obs_s = smem + FW_FLOATS + wib * WARP_FLOATS;
    float* buf_a = obs_s + OBS_DIM * 32;
    float* buf_b = buf_a + MAXR * 32;
    const long long warp_id = (long long)blockIdx.x * (blockDim.x >> 5) + wib;
    if (warp_id * 32 >= bp) return;
    const long long col = warp_id * 32;  // first sample column of this warp
    const long long n = col + lane;
    const u32 s = samples[n];
    float* gobs = cache + slots[SLOT_OBS];
    if constexpr (OBS_DIM == 4) {
        const float4 o = reinterpret_cast<const float4*>(obs_all)[s];
        obs_s[0 * 32 + lane] = o.x; obs_s[1 * 32 + lane] = o.y;
        obs_s[2 * 32 + lane] = o.z; obs_s[3 * 32 + lane] = o.w;
        gobs[0 * (long long)bp + n] = o.x; gobs[1 * (long long)bp + n] = o.y;
        gobs[2 * (long long)bp + n] = o.z; gobs[3 * (long long)bp + n] = o.w;
    } else {
        // The warp copies its 32 rows together, consecutive lanes reading consecutive features
        // of one row (coalesced), and transposes them into the feature-major scratch and cache.
        for (int idx = lane; idx < 32 * OBS_DIM; idx += 32) {
            const int c = idx / OBS_DIM, k = idx - c * OBS_DIM;
            const float v = obs_all[(long long)samples[col + c] * OBS_DIM + k];
            obs_s[k * 32 + c] = v;
            gobs[k * (long long)bp + col + c] = v;
        }
    }
    __syncwarp();
    float logits[N_ACT];
    net_forward<N_ACT>(smem, obs_s, buf_a, buf_b, cache, slots, SLOT_AH(0), col, bp, lane, logits);
    float value;
    net_forward<1>(smem + FW_ACTOR_FLOATS, obs_s, buf_a, buf_b, cache, slots, SLOT_CH(0), col, bp, lane, &value);
    float* glog = cache + slots[SLOT_LOGITS];
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) glog[a * (long long)bp + n] = logits[a];
    float lp[N_ACT];
    log_softmax(logits, lp);
    const u32 act = actions_all[s];
    act_g[n] = act;
    out_logp[n] = lp[act < N_ACT ? act : 0];
    out_ent[n] = entropy_of(lp);
    out_value[n] = value;
}

// Backward of hidden layers L = NH..1 of one net: delta_{L-1} = (delta_L W_L^T) * (1 - h^2).
template <int L, int NOUT>
__device__ __forceinline__ void hidden_backward(const float* wt_net, float* cur, float* other, float* cache,
                                                const u64* slots, int slot_h0, int slot_d0, long long col,
                                                long long ld, int lane) {
    if constexpr (L >= 1) {
        float* gd = cache + slots[slot_d0 + L - 1] + col;
        const float* gh = cache + slots[slot_h0 + L - 1] + col;
        dense_warp<out_dim(L, NOUT), pad8(in_dim(L)), 0, EPI_DTANH>(wt_net + bw_off(L), cur, other, gd, gh, ld, lane);
        __syncwarp();
        hidden_backward<L - 1, NOUT>(wt_net, other, cur, cache, slots, slot_h0, slot_d0, col, ld, lane);
    }
}

// Per-sample deltas of every layer (pre-activation gradients) into the cache, given dL/dlogp
// (of the stored action), dL/dvalue and dL/dentropy; padded samples carry zeros.
extern "C" __global__ void __launch_bounds__(256)
backward_deltas(const float* __restrict__ params, int bp, float* cache, const u64* __restrict__ slots,
                const u32* __restrict__ act_g, const float* __restrict__ d_logp,
                const float* __restrict__ d_value, const float* __restrict__ d_ent) {
    extern __shared__ __align__(16) float smem[];
    load_backward_weights(params, smem);
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int wib = threadIdx.x >> 5;
    float* buf_a = smem + BW_FLOATS + wib * (2 * MAXR * 32);
    float* buf_b = buf_a + MAXR * 32;
    const long long warp_id = (long long)blockIdx.x * (blockDim.x >> 5) + wib;
    if (warp_id * 32 >= bp) return;
    const long long col = warp_id * 32;
    const long long n = col + lane;
    // Actor head: d logits (reference.rs d_logits).
    float logits[N_ACT], lp[N_ACT];
    const float* glog = cache + slots[SLOT_LOGITS];
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) logits[a] = glog[a * (long long)bp + n];
    log_softmax(logits, lp);
    const float h = entropy_of(lp);
    const u32 act = act_g[n];
    const float dlp = d_logp[n], dent = d_ent[n];
    float* gda = cache + slots[SLOT_AD(NH)];
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) {
        const float p = expf(lp[a]);
        const float onehot = (u32)a == act ? 1.0f : 0.0f;
        // reference.rs::d_entropy_term: 0 where p is 0 (logp may be -inf there).
        const float d = dlp * (onehot - p) - (p == 0.0f ? 0.0f : dent * p * (lp[a] + h));
        buf_a[a * 32 + lane] = d;
        gda[a * (long long)bp + n] = d;
    }
    __syncwarp();
    hidden_backward<NH, N_ACT>(smem, buf_a, buf_b, cache, slots, SLOT_AH(0), SLOT_AD(0), col, bp, lane);
    // Critic head: d value.
    const float dv = d_value[n];
    buf_a[lane] = dv;
    cache[slots[SLOT_CD(NH)] + n] = dv;
    __syncwarp();
    hidden_backward<NH, 1>(smem + BW_ACTOR_FLOATS, buf_a, buf_b, cache, slots, SLOT_CH(0), SLOT_CD(0), col, bp, lane);
}

// partial[c][r * n_out + j] = sum over the samples of chunk c of X[r][n] * D[j][n], where row
// r == n_in is the bias (X = 1). One block: a 64 x 64 tile of (r, j), 4 x 4 per thread.
#define GP_TILE 64
#define GP_STEP 32
#define GP_LD (GP_TILE + 4)
extern "C" __global__ void __launch_bounds__(256)
grad_partial(const float* __restrict__ X, const float* __restrict__ D, int n_in, int n_out, int bp,
             int chunk, float* __restrict__ partial) {
    __shared__ __align__(16) float xs[GP_STEP][GP_LD];
    __shared__ __align__(16) float ds[GP_STEP][GP_LD];
    const int tid = threadIdx.x;
    const int r_base = blockIdx.x * GP_TILE;
    const int j_base = blockIdx.y * GP_TILE;
    const int c = blockIdx.z;
    const long long n_begin = (long long)c * chunk;
    long long n_end = n_begin + chunk;
    if (n_end > bp) n_end = bp;
    const int tr = tid >> 4, tc = tid & 15;
    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;
    for (long long n0 = n_begin; n0 < n_end; n0 += GP_STEP) {
        for (int idx = tid; idx < GP_TILE * GP_STEP; idx += 256) {
            const int rr = idx / GP_STEP, nn = idx - rr * GP_STEP;
            const int r = r_base + rr, j = j_base + rr;
            const long long n = n0 + nn;
            const bool in_range = n < n_end;
            xs[nn][rr] = !in_range ? 0.0f : (r < n_in ? X[(long long)r * bp + n] : (r == n_in ? 1.0f : 0.0f));
            ds[nn][rr] = (in_range && j < n_out) ? D[(long long)j * bp + n] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int nn = 0; nn < GP_STEP; ++nn) {
            const float4 xv = *reinterpret_cast<const float4*>(&xs[nn][tr * 4]);
            const float4 dv = *reinterpret_cast<const float4*>(&ds[nn][tc * 4]);
            const float x4[4] = {xv.x, xv.y, xv.z, xv.w};
            const float d4[4] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
            for (int a = 0; a < 4; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(x4[a], d4[b], acc[a][b]);
        }
        __syncthreads();
    }
    const long long len = (long long)(n_in + 1) * n_out;
#pragma unroll
    for (int a = 0; a < 4; ++a) {
        const int r = r_base + tr * 4 + a;
        if (r > n_in) continue;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const int j = j_base + tc * 4 + b;
            if (j < n_out) partial[(long long)c * len + (long long)r * n_out + j] = acc[a][b];
        }
    }
}

// grad[i] += sum over chunks c (in order) of partial[c][i], for i < len.
extern "C" __global__ void grad_sum(const float* __restrict__ partial, int n_chunks, int len, float* grad) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    float s = 0.0f;
    for (int c = 0; c < n_chunks; ++c) s += partial[(long long)c * len + i];
    grad[i] += s;
}
