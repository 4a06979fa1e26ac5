// The policy network on one warp of 32 samples (SEMANTICS.md section 3), shared by the rollout,
// evaluate and backward kernels. Needs the generated prelude (shape constants) and common.cu.
//
// Layout conventions:
// - Flat parameters (global): per net, layer l is W [in][out] row-major then b [out]; the bias
//   is therefore "row in" of an (in + 1) x out block. Actor first, then critic.
// - Shared-memory forward copy: the same blocks with every hidden width padded to a multiple of
//   8 (zero columns), so a lane can read 8 consecutive weights as two float4.
// - Shared-memory backward copy (layers 1..NH, head included): W transposed, [out][pad8(in)].
// - Per-warp activations: feature-major [feature][32 lanes], so lane e of a warp owns column e.
//
// A warp computes a dense layer as a 32 x OUT matrix product: lane (eg = lane / 8, og = lane % 8)
// owns 8 samples (8 eg .. 8 eg + 7) times TJ <= 8 outputs, and per input feature loads 8
// activations and TJ weights (four 16-byte shared loads) for 64 FMAs.

#define FULL_MASK 0xffffffffu
#define EPI_TANH 0
#define EPI_DTANH 1

__host__ __device__ constexpr int pad8(int n) { return (n + 7) / 8 * 8; }
__host__ __device__ constexpr int in_dim(int l) { return l == 0 ? OBS_DIM : hid(l - 1); }
__host__ __device__ constexpr int hidp(int l) { return pad8(hid(l)); }
// Outputs of layer l of a net with `nout` outputs (l == NH is the head).
__host__ __device__ constexpr int out_dim(int l, int nout) { return l < NH ? hid(l) : nout; }
__host__ __device__ constexpr int out_pad(int l, int nout) { return l < NH ? hidp(l) : nout; }
// Flat (unpadded) offset of layer l inside one net.
__host__ __device__ constexpr int p_off(int l) {
    return l == 0 ? 0 : p_off(l - 1) + (in_dim(l - 1) + 1) * hid(l - 1);
}
__host__ __device__ constexpr int net_params(int nout) { return p_off(NH) + (in_dim(NH) + 1) * nout; }
// Padded forward shared-memory offset of layer l inside one net.
__host__ __device__ constexpr int fw_off(int l) {
    return l == 0 ? 0 : fw_off(l - 1) + (in_dim(l - 1) + 1) * hidp(l - 1);
}
__host__ __device__ constexpr int fw_net_floats(int nout) { return pad8(fw_off(NH) + (in_dim(NH) + 1) * nout); }
// Transposed backward offset of layer l >= 1 inside one net.
__host__ __device__ constexpr int bw_off(int l) {
    return l <= 1 ? 0 : bw_off(l - 1) + hid(l - 1) * pad8(in_dim(l - 1));
}
__host__ __device__ constexpr int bw_net_floats(int nout) { return NH == 0 ? 0 : pad8(bw_off(NH) + nout * pad8(in_dim(NH))); }

#define ACTOR_PARAMS net_params(N_ACT)
#define NUM_PARAMS (net_params(N_ACT) + net_params(1))
#define FW_ACTOR_FLOATS fw_net_floats(N_ACT)
#define FW_FLOATS (fw_net_floats(N_ACT) + fw_net_floats(1))
#define BW_ACTOR_FLOATS bw_net_floats(N_ACT)
#define BW_FLOATS (bw_net_floats(N_ACT) + bw_net_floats(1))
// Per-warp scratch: observations [OBS_DIM][32] then two ping-pong buffers [MAXR][32].
#define WARP_FLOATS ((OBS_DIM + 2 * MAXR) * 32)

// Activation-cache slots of evaluate/backward (the offsets come from the host, see train.rs).
#define SLOT_OBS 0
#define SLOT_AH(l) (1 + (l))
#define SLOT_CH(l) (1 + NH + (l))
#define SLOT_AD(l) (1 + 2 * NH + (l))
#define SLOT_CD(l) (2 + 3 * NH + (l))
#define SLOT_LOGITS (3 + 4 * NH)
#define NUM_SLOTS (4 + 4 * NH)

static_assert(N_ACT <= MAXR, "scratch rows must hold the logits gradient");

// ---- weight loaders (whole block) -------------------------------------------------------------
template <int L, int NOUT>
__device__ __forceinline__ void load_net_fw(const float* __restrict__ p, float* s) {
    constexpr int IN = in_dim(L);
    constexpr int OUT = out_dim(L, NOUT);
    constexpr int OUTP = out_pad(L, NOUT);
    const float* pw = p + p_off(L);
    float* sw = s + fw_off(L);
    for (int i = threadIdx.x; i < (IN + 1) * OUTP; i += blockDim.x) {
        const int k = i / OUTP, j = i - k * OUTP;
        sw[i] = j < OUT ? pw[k * OUT + j] : 0.0f;
    }
    if constexpr (L < NH) load_net_fw<L + 1, NOUT>(p, s);
}

__device__ __forceinline__ void load_forward_weights(const float* __restrict__ params, float* s) {
    load_net_fw<0, N_ACT>(params, s);
    load_net_fw<0, 1>(params + ACTOR_PARAMS, s + FW_ACTOR_FLOATS);
}

template <int L, int NOUT>
__device__ __forceinline__ void load_net_bw(const float* __restrict__ p, float* s) {
    if constexpr (L >= 1 && L <= NH) {
        constexpr int IN = in_dim(L);
        constexpr int INP = pad8(IN);
        constexpr int OUT = out_dim(L, NOUT);
        const float* pw = p + p_off(L);
        float* sw = s + bw_off(L);
        for (int i = threadIdx.x; i < OUT * INP; i += blockDim.x) {
            const int j = i / INP, k = i - j * INP;
            sw[i] = k < IN ? pw[k * OUT + j] : 0.0f;
        }
        load_net_bw<L + 1, NOUT>(p, s);
    }
}

__device__ __forceinline__ void load_backward_weights(const float* __restrict__ params, float* s) {
    load_net_bw<1, N_ACT>(params, s);
    load_net_bw<1, 1>(params + ACTOR_PARAMS, s + BW_ACTOR_FLOATS);
}

// ---- warp-tiled dense layer ---------------------------------------------------------------
template <int TJ>
__device__ __forceinline__ void load_row(const float* w, float* v) {
    if constexpr (TJ % 4 == 0) {
#pragma unroll
        for (int q = 0; q < TJ / 4; ++q) {
            const float4 t = reinterpret_cast<const float4*>(w)[q];
            v[4 * q] = t.x; v[4 * q + 1] = t.y; v[4 * q + 2] = t.z; v[4 * q + 3] = t.w;
        }
    } else if constexpr (TJ % 2 == 0) {
#pragma unroll
        for (int q = 0; q < TJ / 2; ++q) {
            const float2 t = reinterpret_cast<const float2*>(w)[q];
            v[2 * q] = t.x; v[2 * q + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int q = 0; q < TJ; ++q) v[q] = w[q];
    }
}

// out[j][e] = epi(sum_k in[k][e] * W[k][j]) for j in [C0, OUTP), in chunks of 64 columns.
// EPI_TANH: tanh(b[j] + sum) (the reference's order: sum first, then bias).
// EPI_DTANH: sum * (1 - h*h) with h = hsrc[j * ld + e] (global activation cache), no bias.
// gout (may be null): also store the result to global gout[j * ld + e].
template <int K, int OUTP, int C0, int EPI>
__device__ __forceinline__ void dense_warp(const float* W, const float* in, float* out,
                                           float* gout, const float* hsrc, long long ld, int lane) {
    if constexpr (C0 < OUTP) {
        constexpr int CW = (OUTP - C0) < 64 ? (OUTP - C0) : 64;
        constexpr int TJ = CW / 8;
        static_assert(CW % 8 == 0, "padded widths are multiples of 8");
        const int e0 = (lane >> 3) * 8;
        const int j0 = C0 + (lane & 7) * TJ;
        float acc[8][TJ];
#pragma unroll
        for (int e = 0; e < 8; ++e)
#pragma unroll
            for (int jj = 0; jj < TJ; ++jj) acc[e][jj] = 0.0f;
#pragma unroll 4
        for (int k = 0; k < K; ++k) {
            const float4 xa = *reinterpret_cast<const float4*>(in + k * 32 + e0);
            const float4 xb = *reinterpret_cast<const float4*>(in + k * 32 + e0 + 4);
            const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
            float wv[TJ];
            load_row<TJ>(W + k * OUTP + j0, wv);
#pragma unroll
            for (int e = 0; e < 8; ++e)
#pragma unroll
                for (int jj = 0; jj < TJ; ++jj) acc[e][jj] = fmaf(xv[e], wv[jj], acc[e][jj]);
        }
#pragma unroll
        for (int jj = 0; jj < TJ; ++jj) {
            const int j = j0 + jj;
            float r[8];
            if constexpr (EPI == EPI_TANH) {
                const float bj = W[K * OUTP + j];  // bias row
#pragma unroll
                for (int e = 0; e < 8; ++e) r[e] = tanh_net(bj + acc[e][jj]);
            } else {
                const float4 ha = *reinterpret_cast<const float4*>(hsrc + j * ld + e0);
                const float4 hb = *reinterpret_cast<const float4*>(hsrc + j * ld + e0 + 4);
                const float h[8] = {ha.x, ha.y, ha.z, ha.w, hb.x, hb.y, hb.z, hb.w};
#pragma unroll
                for (int e = 0; e < 8; ++e) r[e] = acc[e][jj] * (1.0f - h[e] * h[e]);
            }
            const float4 ra = make_float4(r[0], r[1], r[2], r[3]);
            const float4 rb = make_float4(r[4], r[5], r[6], r[7]);
            *reinterpret_cast<float4*>(out + j * 32 + e0) = ra;
            *reinterpret_cast<float4*>(out + j * 32 + e0 + 4) = rb;
            if (gout != nullptr) {
                *reinterpret_cast<float4*>(gout + j * ld + e0) = ra;
                *reinterpret_cast<float4*>(gout + j * ld + e0 + 4) = rb;
            }
        }
        dense_warp<K, OUTP, C0 + 64, EPI>(W, in, out, gout, hsrc, ld, lane);
    }
}

// Hidden layers L.. of one net; returns the scratch buffer holding the last activation (or
// `in` when the net has no hidden layer). cache/slot0: optional global copies (evaluate).
template <int L>
__device__ __forceinline__ const float* hidden_forward(const float* wnet, const float* in, float* buf_a,
                                                       float* buf_b, float* cache, const u64* slots,
                                                       int slot0, long long col, long long ld, int lane) {
    if constexpr (L < NH) {
        float* out = (L & 1) ? buf_b : buf_a;
        float* g = cache != nullptr ? cache + slots[slot0 + L] + col : nullptr;
        dense_warp<in_dim(L), hidp(L), 0, EPI_TANH>(wnet + fw_off(L), in, out, g, nullptr, ld, lane);
        __syncwarp();
        return hidden_forward<L + 1>(wnet, out, buf_a, buf_b, cache, slots, slot0, col, ld, lane);
    } else {
        return in;
    }
}

// Output layer of one net for this lane's sample: y[o] = b[o] + sum_k h[k] W[k][o].
template <int NOUT>
__device__ __forceinline__ void head_forward(const float* wnet, const float* h, int lane, float* y) {
    constexpr int K = in_dim(NH);
    const float* w = wnet + fw_off(NH);
    float acc[NOUT];
#pragma unroll
    for (int o = 0; o < NOUT; ++o) acc[o] = 0.0f;
#pragma unroll 8
    for (int k = 0; k < K; ++k) {
        const float x = h[k * 32 + lane];
#pragma unroll
        for (int o = 0; o < NOUT; ++o) acc[o] = fmaf(x, w[k * NOUT + o], acc[o]);
    }
#pragma unroll
    for (int o = 0; o < NOUT; ++o) y[o] = w[K * NOUT + o] + acc[o];
}

// Whole net on the warp's 32 observations (obs_s, [OBS_DIM][32]); y: this lane's outputs.
template <int NOUT>
__device__ __forceinline__ void net_forward(const float* wnet, const float* obs_s, float* buf_a, float* buf_b,
                                            float* cache, const u64* slots, int slot0, long long col,
                                            long long ld, int lane, float* y) {
    const float* h = hidden_forward<0>(wnet, obs_s, buf_a, buf_b, cache, slots, slot0, col, ld, lane);
    head_forward<NOUT>(wnet, h, lane, y);
    __syncwarp();
}

// ---- categorical head (reference.rs log_softmax / entropy / sample) ------------------------
__device__ __forceinline__ void log_softmax(const float* l, float* lp) {
    float m = l[0];
#pragma unroll
    for (int a = 1; a < N_ACT; ++a) m = fmaxf(m, l[a]);
    float sum = 0.0f;
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) sum += expf(l[a] - m);
    const float lse = m + logf(sum);
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) lp[a] = l[a] - lse;
}

// reference.rs::p_logp: an action of probability 0 adds 0 (its logp may be -inf); NaN propagates.
__device__ __forceinline__ float p_logp(float p, float lp) { return p == 0.0f ? 0.0f : p * lp; }

__device__ __forceinline__ float entropy_of(const float* lp) {
    float s = 0.0f;
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) s += p_logp(expf(lp[a]), lp[a]);
    return -s;
}

__device__ __forceinline__ u32 sample_action(const float* lp, float u) {
    float cum = 0.0f;
#pragma unroll
    for (int a = 0; a < N_ACT; ++a) {
        cum += expf(lp[a]);
        if (u < cum) return (u32)a;
    }
    return (u32)(N_ACT - 1);
}

// Reports the shape constants so the host can check its own layout arithmetic.
extern "C" __global__ void shape_info(int* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        out[0] = ACTOR_PARAMS;
        out[1] = NUM_PARAMS;
        out[2] = FW_FLOATS;
        out[3] = BW_FLOATS;
        out[4] = WARP_FLOATS;
        out[5] = NUM_SLOTS;
    }
}
