// Global-norm clipping and Adam (SEMANTICS.md section 5), compiled with --fmad=false so every
// element follows reference.rs::clip_grad_norm / adam_step operation for operation.

typedef unsigned int u32;

// out[0] = sum of g^2 in f64 (one block; a fixed tree, so the result is deterministic).
extern "C" __global__ void __launch_bounds__(1024) grad_sqnorm(const float* __restrict__ g, int n, double* out) {
    __shared__ double part[1024];
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const double v = (double)g[i];
        s += v * v;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = part[0];
}

// One Adam step on every parameter; clips first when clip != 0 and norm > max_norm; zeroes g.
// norm_out[0] receives the norm before clipping.
extern "C" __global__ void adam_step(float* p, float* g, float* m, float* v, int n, float lr,
                                     float b1, float b2, float eps, float bc1, float bc2,
                                     int clip, float max_norm, const double* __restrict__ sq,
                                     float* norm_out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float norm = (float)sqrt(sq[0]);
    if (i == 0) norm_out[0] = norm;
    if (i >= n) return;
    float gi = g[i];
    if (clip != 0 && norm > max_norm) {
        const float coef = max_norm / (norm + 1e-6f);
        gi = gi * coef;
    }
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float m_hat = mi / bc1;
    const float v_hat = vi / bc2;
    p[i] = p[i] - lr * m_hat / (sqrtf(v_hat) + eps);
    g[i] = 0.0f;
}
