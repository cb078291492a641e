// cuda_cpu.h: the CUDA built-ins that gpu/kernels/*.cu use, mapped onto a
// CPU, so that the same, unmodified .cu files compile with the host C++
// compiler (g++ -std=c++20) and run in the tests.
//
// Included first, before common.cuh and the .cu file (see build.rs, which
// generates one translation unit per .cu file, as NVRTC compiles one
// program per file).
//
// Execution model (runtime.cpp):
// * A launch runs its blocks one after another, on the calling OS thread.
// * The threads of a block are fibers (ucontext) on that OS thread. A block
//   starts on one fiber that calls the kernel for thread 0, then thread 1,
//   ... as plain function calls. A thread that reaches __syncthreads is
//   suspended on the fiber it runs on, and the remaining threads continue
//   on a fresh fiber. Once every thread has started, the suspended ones are
//   resumed in thread order, each until its next barrier or its end, and so
//   on. So __syncthreads is a real barrier (no thread passes it before every
//   thread of its block has reached it), shared-memory reductions run as
//   written, and a kernel without barriers costs one fiber per block.
// * __syncthreads reached by some threads of a block while others have
//   returned is an error (the launch fails), as CUDA says it is undefined.
// * threadIdx, blockIdx, blockDim, gridDim are read-only views of the
//   current CUDA thread's values (set by the scheduler at every switch).
// * __shared__ variables are function-local statics, one per OS thread:
//   shared by the threads of the block that runs, as on a GPU. They are
//   not cleared between blocks (GPU shared memory is not initialised
//   either).
// * Arithmetic is the host's IEEE-754 single precision with no contraction
//   of a*b+c into an FMA (build.rs passes -ffp-contract=off; NVRTC gets
//   --fmad=false, gpu/src/kernels.rs), so a kernel computes here what the
//   CPU kernel computes wherever the order of operations is the same.
// * expf, logf, tanhf and cosf are the CPU kernel's own (fdgr_kernel::Real
//   for f32, the `libm` crate), installed by the Rust side
//   (src/lib.rs) before any launch: a difference between a kernel run here
//   and the Rust it mirrors is then a difference in the CUDA C itself, not
//   in two math libraries. CUDA's own versions (documented to within 2, 1
//   and 2 ulp of the exact result) may differ from these by a few ulps;
//   only a GPU run (gpu/check.sh) measures that. sqrtf, fabsf, fmaxf and
//   the like are exact everywhere and come from <math.h>.
// * Limits: between two barriers the threads run one after another, in
//   thread order, so a data race (two threads of one phase using the same
//   shared word, one of them writing) runs in that one order and shows
//   only if it changes the result; code that relies on warp-synchronous
//   execution without barriers is not supported.
//
// Not provided (a kernel using them fails to compile here, loudly): warp
// intrinsics (__shfl_*, __ballot_sync, ...), the fast-math intrinsics
// (__expf, ...), dynamic shared memory, textures, cooperative groups.

#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <utility>

// ---- vector types -------------------------------------------------------

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

// ---- the current thread's coordinates -----------------------------------

namespace cuda_cpu {
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern thread_local dim3 block_dim;
extern thread_local dim3 grid_dim;
// Suspends the calling CUDA thread until every thread of its block is here.
void sync_threads();
}  // namespace cuda_cpu

#define threadIdx (static_cast<const uint3&>(::cuda_cpu::thread_idx))
#define blockIdx (static_cast<const uint3&>(::cuda_cpu::block_idx))
#define blockDim (static_cast<const dim3&>(::cuda_cpu::block_dim))
#define gridDim (static_cast<const dim3&>(::cuda_cpu::grid_dim))
#define warpSize 32

inline void __syncthreads() { ::cuda_cpu::sync_threads(); }

// ---- qualifiers -----------------------------------------------------------

// Kernels keep external linkage (build.rs renames each one to a unique
// symbol and puts its launcher in the same translation unit). Device
// functions and variables are local to their file, as in an NVRTC program.
#define __global__
#define __device__ static
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __constant__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __restrict__ is a g++ keyword already.

// ---- atomics ----------------------------------------------------------------
// Blocks run on one OS thread, but the operations are atomic anyway (GCC
// builtins), so they stay correct whatever calls them. Each returns the old
// value, as CUDA's do.

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* p, float v) {
    static_assert(sizeof(float) == sizeof(unsigned int));
    unsigned int* u = reinterpret_cast<unsigned int*>(p);
    unsigned int old = __atomic_load_n(u, __ATOMIC_SEQ_CST);
    for (;;) {
        float f;
        std::memcpy(&f, &old, sizeof f);
        const float sum = f + v;
        unsigned int next;
        std::memcpy(&next, &sum, sizeof next);
        if (__atomic_compare_exchange_n(u, &old, next, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            return f;
        }
    }
}
inline unsigned int atomicExch(unsigned int* p, unsigned int v) {
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned int atomicCAS(unsigned int* p, unsigned int expected, unsigned int v) {
    __atomic_compare_exchange_n(p, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;  // the old value, whether or not it was swapped
}
// ---- maths --------------------------------------------------------------------
// The classification functions as CUDA spells them:
using std::isfinite;
using std::isinf;
using std::isnan;

// The transcendental functions the kernels call: the CPU kernel's own
// (installed through fdgr_cpu_set_math by src/lib.rs; the host libm's
// until then). Every standard header is included above, so the macros
// below reach only the kernel sources.
namespace cuda_cpu {
struct Math {
    float (*exp)(float);
    float (*log)(float);
    float (*tanh)(float);
    float (*cos)(float);
};
extern Math math;
}  // namespace cuda_cpu
inline float fdgr_cpu_expf(float x) { return ::cuda_cpu::math.exp(x); }
inline float fdgr_cpu_logf(float x) { return ::cuda_cpu::math.log(x); }
inline float fdgr_cpu_tanhf(float x) { return ::cuda_cpu::math.tanh(x); }
inline float fdgr_cpu_cosf(float x) { return ::cuda_cpu::math.cos(x); }
#ifndef CUDA_CPU_NO_MATH_MACROS
#define expf fdgr_cpu_expf
#define logf fdgr_cpu_logf
#define tanhf fdgr_cpu_tanhf
#define cosf fdgr_cpu_cosf
#endif

inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// ---- what a generated launcher needs (build.rs) ---------------------------------

// One kernel as the runtime and the Rust side see it (gpu/cpu-runtime/src/lib.rs:
// RawKernel has the same layout).
struct fdgr_cpu_kernel {
    const char* name;       // the kernel's C name in the .cu file
    const char* file;       // the .cu file
    const char* signature;  // parameter types, as compiled: e.g. "f32*,const f32*,u64,u32,i32"
    void (*thread)(void** args);  // runs the kernel once, for the current CUDA thread
};

namespace cuda_cpu {

template <class T>
struct param_name {
    static_assert(sizeof(T) == 0,
                  "kernel parameter type not supported by the CPU runtime "
                  "(float, int, unsigned int, unsigned long long, or pointers to float / "
                  "unsigned int)");
};
template <> struct param_name<float> { static constexpr const char* v = "f32"; };
template <> struct param_name<int> { static constexpr const char* v = "i32"; };
template <> struct param_name<unsigned int> { static constexpr const char* v = "u32"; };
template <> struct param_name<unsigned long long> { static constexpr const char* v = "u64"; };
template <> struct param_name<float*> { static constexpr const char* v = "f32*"; };
template <> struct param_name<const float*> { static constexpr const char* v = "const f32*"; };
template <> struct param_name<unsigned int*> { static constexpr const char* v = "u32*"; };
template <> struct param_name<const unsigned int*> {
    static constexpr const char* v = "const u32*";
};

// The comma-separated parameter types of a kernel, built at compile time.
constexpr std::size_t length(const char* s) {
    std::size_t n = 0;
    while (s[n]) ++n;
    return n;
}

template <class... P>
struct signature {
    static constexpr std::size_t len() {
        std::size_t n = 0;
        ((n += length(param_name<P>::v) + 1), ...);
        return n == 0 ? 1 : n;
    }
    static constexpr auto text() {
        struct S {
            char c[len()] = {};
        } s;
        std::size_t i = 0;
        bool first = true;
        auto put = [&](const char* p) {
            if (!first) s.c[i++] = ',';
            first = false;
            for (; *p; ++p) s.c[i++] = *p;
        };
        (put(param_name<P>::v), ...);
        s.c[i] = 0;
        return s;
    }
    static constexpr auto value = text();
};

template <class... P>
constexpr const char* signature_of(void (*)(P...)) {
    return signature<P...>::value.c;
}

// Calls kernel K with the arguments at args[i] (each points to a value of
// the parameter's type, as cuLaunchKernel's kernelParams).
template <class... P, std::size_t... I>
inline void call_with(void (*k)(P...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<P>*>(args[I])...);
}

template <auto K>
struct thread_of;
template <class... P, void (*K)(P...)>
struct thread_of<K> {
    static void run(void** args) { call_with(K, args, std::index_sequence_for<P...>{}); }
};

}  // namespace cuda_cpu

// Defines the entry `fdgr_cpu_kernel_<name>` of a kernel compiled in this
// translation unit under the symbol `fn`.
#define FDGR_CPU_KERNEL(name, fn, file)                                           \
    extern "C" const fdgr_cpu_kernel fdgr_cpu_kernel_##name = {                   \
        #name, file, ::cuda_cpu::signature_of(&fn), &::cuda_cpu::thread_of<&fn>::run};
