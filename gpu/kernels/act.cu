// Elementwise layer maths around the cuBLAS products: the forward bias +
// activation, the backward activation derivative, the R-operator's
// activation terms, and column sums (bias gradients).
// Mirrors fdgr_kernel::act; compiled after common.cuh.

// Mirrors act::bias_act (forward pass, fused after the SGEMM z = a W^T):
// z[r, c] = sigma(z[r, c] + bias[c]), z is rows x cols, in place.
extern "C" __global__ void bias_act(float* z, const float* bias, u64 rows, u32 cols, int act) {
    const u64 n = rows * (u64)cols;
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        const u32 c = (u32)(i % cols);
        z[i] = act_f(act, z[i] + bias[c]);
    }
}

// Mirrors act::act_backward (backward pass): delta = delta * sigma'(a), in
// place. The host does not launch it for the identity.
extern "C" __global__ void act_backward(float* delta, const float* a, u64 n, int act) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        delta[i] *= act_df(act, a[i]);
    }
}

// Mirrors act::bias_add followed by act::r_act (the R-forward of
// mlp::r_pass), fused: R{z}[r, c] += v_b[c]; R{a} = sigma'(a) * R{z}.
extern "C" __global__ void r_bias_act(float* rz, float* ra, const float* vb, const float* a,
                                      u64 rows, u32 cols, int act) {
    const u64 n = rows * (u64)cols;
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        const u32 c = (u32)(i % cols);
        const float z = rz[i] + vb[c];
        rz[i] = z;
        ra[i] = act_df(act, a[i]) * z;
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
