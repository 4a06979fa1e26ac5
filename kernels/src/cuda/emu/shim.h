// CPU emulation shim (kernels/src/cuda/emu/run.sh) for drover's .cu files: one std::thread per CUDA thread of one block.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <barrier>
#include <mutex>
#include <vector>
#include <thread>
#include <functional>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local_block
#define thread_local_block /* static storage shared by the block's threads */
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct dim3 { unsigned x = 0, y = 0, z = 0; };
extern thread_local dim3 threadIdx;
extern dim3 blockIdx, blockDim, gridDim;
extern std::barrier<>* g_block_barrier;
extern std::vector<std::barrier<>*> g_warp_barriers;
extern float* g_dyn_smem;
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { g_warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
extern int g_any_flags[1024];
inline bool __any_sync(unsigned, bool p) {
    __syncwarp();
    g_any_flags[threadIdx.x] = p;
    __syncwarp();
    bool r = false;
    for (unsigned i = threadIdx.x / 32 * 32; i < threadIdx.x / 32 * 32 + 32; ++i) r |= g_any_flags[i] != 0;
    __syncwarp();
    return r;
}
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
extern std::mutex g_atomic_mu;
inline unsigned atomicAdd(unsigned* p, unsigned v) { std::lock_guard<std::mutex> l(g_atomic_mu); unsigned o = *p; *p += v; return o; }
inline double atomicAdd(double* p, double v) { std::lock_guard<std::mutex> l(g_atomic_mu); double o = *p; *p += v; return o; }
#include <math.h>
