// Test kernels of the CPU runtime itself (src/lib.rs tests), written as
// CUDA C like gpu/kernels/*.cu. Not part of fdgr's kernel table.

typedef unsigned int u32;
typedef unsigned long long u64;

// Each thread reads what its neighbour wrote before the barrier, twice:
// wrong unless __syncthreads is a barrier for the whole block.
extern "C" __global__ void st_barrier_neighbour(u32* out) {
    __shared__ u32 sh[1024];
    const u32 n = blockDim.x * blockDim.y * blockDim.z;
    const u32 t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    sh[t] = t + 1 + 1000 * blockIdx.x;
    __syncthreads();
    const u32 a = sh[(t + 1) % n];
    __syncthreads();
    sh[t] = 2 * a;
    __syncthreads();
    out[blockIdx.x * n + t] = sh[(t + n - 1) % n];
}

// A tree sum in shared memory over a power-of-two block (many barriers,
// inside a loop in a device function).
__device__ __forceinline__ float st_block_sum(float* sh, float v) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    return sh[0];
}
extern "C" __global__ void st_tree_sum(const float* v, float* out) {
    __shared__ float sh[1024];
    const float t = st_block_sum(sh, v[blockIdx.x * blockDim.x + threadIdx.x]);
    if (threadIdx.x == 0) out[blockIdx.x] = t;
}

// Every thread of a 3-D grid of 3-D blocks writes its coordinates at its
// linear index.
extern "C" __global__ void st_coordinates(u32* out) {
    const u32 b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const u32 nt = blockDim.x * blockDim.y * blockDim.z;
    const u32 t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    u32* o = out + 8 * (b * nt + t);
    o[0] = threadIdx.x;
    o[1] = threadIdx.y;
    o[2] = threadIdx.z;
    o[3] = blockIdx.x;
    o[4] = blockIdx.y;
    o[5] = blockIdx.z;
    o[6] = blockDim.x * 10000 + blockDim.y * 100 + blockDim.z;
    o[7] = gridDim.x * 10000 + gridDim.y * 100 + gridDim.z;
}

// atomicAdd's old values: each thread takes a distinct ticket.
extern "C" __global__ void st_atomics(u32* counter, u32* taken, float* fsum) {
    const u32 ticket = atomicAdd(counter, 1u);
    atomicAdd(&taken[ticket], 1u);
    atomicAdd(fsum, 0.5f);
}

// A barrier that thread 0 never reaches: undefined in CUDA, an error here.
extern "C" __global__ void st_divergent_barrier(u32* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1u;
}

// A grid-stride loop over n elements with whatever grid it is given.
extern "C" __global__ void st_grid_stride(u32* out, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        out[i] += 1u;
    }
}
