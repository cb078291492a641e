// fdgr GPU kernels: definitions shared by every .cu file.
//
// NVRTC compiles each .cu file as one translation unit; gpu/src/kernels.rs
// prepends this header to it (NVRTC has no include path here), so every
// file is `common.cuh` + `<file>.cu`.
//
// Conventions (all files):
// * Every kernel mirrors one Rust function of fdgr-kernel; its comment
//   names it. The maths is the same, term by term and grouped the same
//   way; only the order of floating-point sums differs where the GPU
//   reduces in parallel. NVRTC compiles with --fmad=false (no a*b + c
//   contracted into an FMA, as in the Rust). The tests hold each kernel to
//   this: they compile these files for the CPU (gpu/cpu-runtime) and
//   compare every kernel with the Rust it mirrors (gpu/src/cuda_c_tests.rs).
// * Matrices are row-major, as in the kernel crate (a batch of B samples
//   of n values is B x n, sample after sample).
// * Element counts that can exceed 2^31 (parameter vectors, batch blocks,
//   the resident data set) are 64-bit; loops are grid-stride loops, so any
//   grid size covers any n (gpu/src/launch.rs picks the grid).
// * Pointers documented "nullable" may be 0.

typedef unsigned int u32;
typedef unsigned long long u64;

// Activation codes: fdgr_kernel::Act (gpu/src/ops.rs: act_code).
#define ACT_IDENTITY 0
#define ACT_RELU 1
#define ACT_TANH 2
#define ACT_SIGMOID 3

// Optimizer rules RULE_<NAME>: fdgr_kernel::optim::Rule, defined before
// this file from the kernel's enum (kernels/codes.rs).

// Loss codes: fdgr_kernel::Loss (gpu/src/ops.rs: loss_code).
#define LOSS_SOFTMAX_CE 0
#define LOSS_MSE 1

// Threads per block of the one-block reductions (gpu/src/launch.rs: REDUCE_THREADS).
#define REDUCE_THREADS 256

// Mirrors Act::f.
__device__ __forceinline__ float act_f(int act, float z) {
    switch (act) {
    case ACT_RELU: return z > 0.0f ? z : 0.0f;
    case ACT_TANH: return tanhf(z);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-z));
    default: return z;
    }
}

// Mirrors Act::df: sigma'(z) written as a function of a = sigma(z).
__device__ __forceinline__ float act_df(int act, float a) {
    switch (act) {
    case ACT_RELU: return a > 0.0f ? 1.0f : 0.0f;
    case ACT_TANH: return 1.0f - a * a;
    case ACT_SIGMOID: return a * (1.0f - a);
    default: return 1.0f;
    }
}

// Mirrors Act::kappa: sigma''(z)/sigma'(z) as a function of a = sigma(z).
__device__ __forceinline__ float act_kappa(int act, float a) {
    switch (act) {
    case ACT_TANH: return -(2.0f * a);
    case ACT_SIGMOID: return 1.0f - 2.0f * a;
    default: return 0.0f;
    }
}

// First index of a grid-stride loop, and its stride.
__device__ __forceinline__ u64 gs_start() {
    return (u64)blockIdx.x * (u64)blockDim.x + (u64)threadIdx.x;
}
__device__ __forceinline__ u64 gs_stride() {
    return (u64)gridDim.x * (u64)blockDim.x;
}

// Fixed-order tree sum of REDUCE_THREADS values in shared memory; returns
// the total in thread 0 (deterministic: the same tree every launch). T is
// float, or double for the sums batch norm's statistics accumulate in.
template <class T>
__device__ __forceinline__ T block_sum(T* sh, T v) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    return sh[0];
}

// block_sum whose total every thread of the block may use, and after which
// the shared buffer may be written again (a second barrier).
template <class T>
__device__ __forceinline__ T block_sum_all(T* sh, T v) {
    const T t = block_sum(sh, v);
    __syncthreads();
    return t;
}
