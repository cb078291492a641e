// Elementwise layer maths around the products and convolutions: the
// forward bias + activation (per column or per channel plane), the
// backward activation derivative, the R-operator's activation terms, and
// column / channel sums (bias gradients).
// Mirrors fdgr_kernel::act; compiled after common.cuh.

// Mirrors act::bias_act_chw (the forward pass after a product or a
// convolution): z = sigma(z + bias[ch]) in place on an N x C x HW block of
// n values, ch = (i / hw) % c; bias nullable (then z = sigma(z); the host
// does not launch it for the identity without a bias). With hw = 1 this is
// act::bias_act on N rows of C.
extern "C" __global__ void bias_act(float* z, const float* bias, u64 n, u32 c, u32 hw, int act) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        if (bias) {
            const u32 ch = (u32)((i / hw) % c);
            z[i] = act_f(act, z[i] + bias[ch]);
        } else {
            z[i] = act_f(act, z[i]);
        }
    }
}

// Mirrors act::act_map: y = sigma(x), out of place.
extern "C" __global__ void act_map(float* y, const float* x, u64 n, int act) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        y[i] = act_f(act, x[i]);
    }
}

// Mirrors act::act_backward (backward pass): delta = delta * sigma'(a), in
// place. The host does not launch it for the identity.
extern "C" __global__ void act_backward(float* delta, const float* a, u64 n, int act) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        delta[i] *= act_df(act, a[i]);
    }
}

// Mirrors act::r_act (the R-forward of an activation): R{a} = sigma'(a) R{z}.
extern "C" __global__ void r_act(float* ra, const float* rz, const float* a, u64 n, int act) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        ra[i] = act_df(act, a[i]) * rz[i];
    }
}

// Mirrors act::r_act_backward (the R-backward of mlp::r_pass), in place
// on rd (holds R{delta a} on entry, R{delta z} on exit):
// ReLU: rd *= sigma'(a); tanh, sigmoid: rd = kappa(a) R{z} dz + sigma'(a) rd.
// The host does not launch it for the identity.
extern "C" __global__ void r_act_backward(float* rd, const float* rz, const float* a,
                                          const float* dz, u64 n, int act) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        const float ai = a[i];
        if (act == ACT_RELU) {
            rd[i] *= act_df(act, ai);
        } else {
            rd[i] = act_kappa(act, ai) * rz[i] * dz[i] + act_df(act, ai) * rd[i];
        }
    }
}

// Mirrors act::col_sum: out[c] = beta * out[c] + sum_r alpha * m[r, c]
// (m is rows x cols); beta = 0 overwrites out, NaN included (the BLAS
// convention, as vecops::scale_or_zero). The bias gradient of a layer, with
// loss_grad's alpha/beta: this is where F-GR's combination
// d = (1 - gamma/eps) g + (gamma/eps) g' happens for the biases (the
// SGEMM's alpha/beta does it for the weights).
// Block (32, 8): 32 columns per block; row group y sums alpha * m over the
// rows y, y + 8, ...; then beta * out + group 0 + group 1 + ... + group 7,
// in that order. The kernel's terms, and its order for up to 8 rows.
extern "C" __global__ void col_sum(float* out, const float* m, u32 rows, u32 cols, float alpha,
                                   float beta) {
    __shared__ float part[8][33];
    const u32 c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < cols) {
        for (u32 r = threadIdx.y; r < rows; r += 8) s += alpha * m[(u64)r * cols + c];
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t = beta == 0.0f ? 0.0f : beta * out[c];
        for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
        out[c] = t;
    }
}

// Mirrors act::chan_sum over planes (hw > 1; hw = 1 is col_sum):
// out[ch] = beta * out[ch] + sum over the planes p of channel ch, in plane
// order, of alpha * (plane p's sum, added left to right from its first
// value), where plane p = (sample, ch) holds hw values; beta = 0 overwrites
// out (NaN included). One block per channel: each thread sums whole planes
// (the kernel's order inside a plane), thread 0 adds the block's plane
// terms in plane order, REDUCE_THREADS planes at a time. The kernel's
// terms in the kernel's order: bit for bit.
extern "C" __global__ void chan_sum(float* out, const float* m, u32 planes, u32 c, u32 hw,
                                    float alpha, float beta) {
    __shared__ float part[REDUCE_THREADS];
    const u32 ch = blockIdx.x;
    const u32 per = planes / c; // planes of this channel (samples)
    float acc = 0.0f;
    if (threadIdx.x == 0) acc = beta == 0.0f ? 0.0f : beta * out[ch];
    for (u32 base = 0; base < per; base += REDUCE_THREADS) {
        const u32 j = base + threadIdx.x;
        if (j < per) {
            const float* p = m + ((u64)j * c + ch) * hw;
            float s = p[0];
            for (u32 t = 1; t < hw; ++t) s += p[t];
            part[threadIdx.x] = alpha * s;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            const u32 end = per - base < REDUCE_THREADS ? per - base : REDUCE_THREADS;
            for (u32 t = 0; t < end; ++t) acc += part[t];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[ch] = acc;
}
