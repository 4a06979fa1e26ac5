// Shared device code of SEMANTICS.md sections 1, 2 and 4: the counter-based RNG, the explicit
// tanh / sincos polynomials and the CartPole step. Prepended to every other .cu file.
//
// Environment arithmetic is written with __fadd_rn / __fsub_rn / __fmul_rn / __fdiv_rn, which
// the compiler never contracts into a fused multiply-add (CUDA Math API). That gives the same
// bits as compiling this code with --fmad=false, while the policy network in the same kernel
// keeps its FMAs. Every expression is evaluated left to right as in kernels/src/reference.rs.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned char u8;

#define STREAM_ACTION 0u
#define STREAM_RESET 1u

// ---- Section 1: counter-based RNG --------------------------------------------------------
__device__ __forceinline__ u32 hash32(u32 x) {
    x ^= x >> 16; x *= 0x7feb352du;
    x ^= x >> 15; x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

__device__ __forceinline__ u32 draw(u32 key, u32 stream, u32 env, u32 counter) {
    return hash32(key ^ hash32(stream ^ hash32(env ^ hash32(counter))));
}

// (draw >> 8) * 2^-24: exact in f32.
__device__ __forceinline__ float uniform01(u32 key, u32 stream, u32 env, u32 counter) {
    return __fmul_rn((float)(draw(key, stream, env, counter) >> 8), 5.9604644775390625e-8f);
}

// ---- Section 4: shared math -----------------------------------------------------------------
#define TANH_CLAMP 7.90531110763549805f
#define TANH_TINY 0.0004f

// tanh of the policy network: the Eigen rational polynomial with FMAs and a fast division.
// Within a few ulp of math.rs::tanh (which has separate multiplies and an IEEE division); the
// network tolerances of the tests cover that. The CUDA rollout and evaluate share this code, so
// their log-probabilities agree bit for bit.
__device__ __forceinline__ float tanh_net(float x) {
    float xc = x > TANH_CLAMP ? TANH_CLAMP : x;
    xc = xc < -TANH_CLAMP ? -TANH_CLAMP : xc;
    const float x2 = xc * xc;
    float p = fmaf(-2.76076847742355e-16f, x2, 2.00018790482477e-13f);
    p = fmaf(p, x2, -8.60467152213735e-11f);
    p = fmaf(p, x2, 5.12229709037114e-08f);
    p = fmaf(p, x2, 1.48572235717979e-05f);
    p = fmaf(p, x2, 6.37261928875436e-04f);
    p = fmaf(p, x2, 4.89352455891786e-03f);
    p = p * xc;
    float q = fmaf(1.19825839466702e-06f, x2, 1.18534705686654e-04f);
    q = fmaf(q, x2, 2.26843463243900e-03f);
    q = fmaf(q, x2, 4.89352518554385e-03f);
    const float r = __fdividef(p, q);
    return fabsf(x) < TANH_TINY ? x : r;
}

// sincos of the environment: bit-identical to math.rs::sincos (same order, no FMA).
__device__ __forceinline__ void sincos_env(float x, float* s_out, float* c_out) {
    const float y = __fmul_rn(x, 0.636619772367581343f);            // FRAC_2_PI as f32
    const float k = __fsub_rn(__fadd_rn(y, 12582912.0f), 12582912.0f);
    const float r = __fsub_rn(__fsub_rn(__fsub_rn(x, __fmul_rn(k, 1.5703125f)),
                                        __fmul_rn(k, 4.837512969970703125e-4f)),
                              __fmul_rn(k, 7.54978995489188216e-8f));
    const float z = __fmul_rn(r, r);
    // s = ((C1*z + C2)*z + C3)*z*r + r
    float s = __fadd_rn(__fmul_rn(-1.9515295891e-4f, z), 8.3321608736e-3f);
    s = __fadd_rn(__fmul_rn(s, z), -1.6666654611e-1f);
    s = __fadd_rn(__fmul_rn(__fmul_rn(s, z), r), r);
    // c = ((C1*z + C2)*z + C3)*z*z - 0.5*z + 1.0
    float c = __fadd_rn(__fmul_rn(2.443315711809948e-5f, z), -1.388731625493765e-3f);
    c = __fadd_rn(__fmul_rn(c, z), 4.166664568298827e-2f);
    c = __fadd_rn(__fsub_rn(__fmul_rn(__fmul_rn(c, z), z), __fmul_rn(0.5f, z)), 1.0f);
    const u32 q = (u32)(int)k;
    const bool swap = (q & 1u) != 0u;
    const float sv = swap ? c : s;
    const float cv = swap ? s : c;
    const u32 sin_sign = (q & 2u) << 30;
    const u32 cos_sign = ((q + 1u) & 2u) << 30;
    *s_out = __uint_as_float(__float_as_uint(sv) ^ sin_sign);
    *c_out = __uint_as_float(__float_as_uint(cv) ^ cos_sign);
}

// ---- Section 2: CartPole-v1 -----------------------------------------------------------------
#define CP_GRAVITY 9.8f
#define CP_MASS_POLE 0.1f
#define CP_TOTAL_MASS 1.1f
#define CP_HALF_LENGTH 0.5f
#define CP_POLEMASS_LENGTH 0.05f
#define CP_FORCE_MAG 10.0f
#define CP_TAU 0.02f
#define CP_FOUR_THIRDS 1.3333334f
#define CP_THETA_THRESHOLD 0.20943951f
#define CP_X_THRESHOLD 2.4f
#define CP_MAX_STEPS 500u

struct CartPole {
    float x, x_dot, theta, theta_dot;
    u32 steps;
};

// Component k = uniform(key, STREAM_RESET, env, 4c + k) * 0.1 - 0.05; steps = 0.
__device__ __forceinline__ void cartpole_reset(CartPole* s, u32 key, u32 env, u32 reset_counter) {
    const u32 c4 = reset_counter * 4u;
    s->x = __fsub_rn(__fmul_rn(uniform01(key, STREAM_RESET, env, c4 + 0u), 0.1f), 0.05f);
    s->x_dot = __fsub_rn(__fmul_rn(uniform01(key, STREAM_RESET, env, c4 + 1u), 0.1f), 0.05f);
    s->theta = __fsub_rn(__fmul_rn(uniform01(key, STREAM_RESET, env, c4 + 2u), 0.1f), 0.05f);
    s->theta_dot = __fsub_rn(__fmul_rn(uniform01(key, STREAM_RESET, env, c4 + 3u), 0.1f), 0.05f);
    s->steps = 0u;
}

// One step (no reset); returns terminated in bit 0 and truncated in bit 1. Reward is 1.
__device__ __forceinline__ u32 cartpole_step(CartPole* st, u32 action) {
    const float force = action == 1u ? CP_FORCE_MAG : -CP_FORCE_MAG;
    float s, c;
    sincos_env(st->theta, &s, &c);
    const float thd = st->theta_dot;
    // temp = (force + pm_len * theta_dot * theta_dot * s) / total
    const float temp = __fdiv_rn(
        __fadd_rn(force, __fmul_rn(__fmul_rn(__fmul_rn(CP_POLEMASS_LENGTH, thd), thd), s)),
        CP_TOTAL_MASS);
    // theta_acc = (g*s - c*temp) / (half_len * (4/3 - m_pole*c*c/total))
    const float num = __fsub_rn(__fmul_rn(CP_GRAVITY, s), __fmul_rn(c, temp));
    const float den = __fmul_rn(CP_HALF_LENGTH,
        __fsub_rn(CP_FOUR_THIRDS, __fdiv_rn(__fmul_rn(__fmul_rn(CP_MASS_POLE, c), c), CP_TOTAL_MASS)));
    const float theta_acc = __fdiv_rn(num, den);
    // x_acc = temp - pm_len * theta_acc * c / total
    const float x_acc = __fsub_rn(temp,
        __fdiv_rn(__fmul_rn(__fmul_rn(CP_POLEMASS_LENGTH, theta_acc), c), CP_TOTAL_MASS));
    st->x = __fadd_rn(st->x, __fmul_rn(CP_TAU, st->x_dot));
    st->x_dot = __fadd_rn(st->x_dot, __fmul_rn(CP_TAU, x_acc));
    st->theta = __fadd_rn(st->theta, __fmul_rn(CP_TAU, thd));
    st->theta_dot = __fadd_rn(thd, __fmul_rn(CP_TAU, theta_acc));
    st->steps += 1u;
    const float x = st->x, th = st->theta;
    const bool terminated = x < -CP_X_THRESHOLD || x > CP_X_THRESHOLD ||
                            th < -CP_THETA_THRESHOLD || th > CP_THETA_THRESHOLD;
    const bool truncated = !terminated && st->steps >= CP_MAX_STEPS;
    return (terminated ? 1u : 0u) | (truncated ? 2u : 0u);
}
