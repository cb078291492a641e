// Parameter-vector operations of the methods (fdgr_kernel::VecSpace on the
// device) and the deterministic reductions. Mirrors fdgr_kernel::vecops;
// compiled after common.cuh.

// Mirrors vecops::axpy: y = y + a x.
extern "C" __global__ void axpy(float* y, float a, const float* x, u64 n) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) y[i] += a * x[i];
}

// Mirrors vecops::waxpy: w = x + a y. This is the epsilon-perturbation of
// fgr / bgr / cgr / sam / usam (point = theta + eps g), fused into one pass
// that writes the perturbed point to its own buffer (theta stays intact).
extern "C" __global__ void waxpy(float* w, const float* x, float a, const float* y, u64 n) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) w[i] = x[i] + a * y[i];
}

// Mirrors vecops::scale: x = a x (the host skips a = 1, as the Rust does).
extern "C" __global__ void scale(float* x, float a, u64 n) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) x[i] *= a;
}

// Mirrors vecops::dot, stage 1: partial[block] = this block's share of
// sum x_i y_i (grid-stride, then a fixed tree). Stage 2 is reduce_sum over
// the gridDim.x partials. Fixed grid and trees: deterministic.
extern "C" __global__ void dot_partial(const float* x, const float* y, u64 n, float* partial) {
    __shared__ float sh[REDUCE_THREADS];
    float s = 0.0f;
    for (u64 i = gs_start(); i < n; i += gs_stride()) s += x[i] * y[i];
    const float t = block_sum(sh, s);
    if (threadIdx.x == 0) partial[blockIdx.x] = t;
}

// One block: out[0] = scale * sum_i v[i] (+ out[0] when accumulate != 0),
// in a fixed order. Used for dot's stage 2 and, with scale 1/B (CE) or
// 1/(B K) (MSE), for the mean of loss::loss_grad (`total * inv_b`).
extern "C" __global__ void reduce_sum(const float* v, u32 n, float scale, int accumulate,
                                      float* out) {
    __shared__ float sh[REDUCE_THREADS];
    float s = 0.0f;
    for (u32 i = threadIdx.x; i < n; i += REDUCE_THREADS) s += v[i];
    const float t = block_sum(sh, s);
    if (threadIdx.x == 0) out[0] = (accumulate ? out[0] : 0.0f) + t * scale;
}

// Mirrors vecops::all_finite (negated): flag[0] = 1 when an entry of x, or
// *scalar (nullable: the loss of the step), is NaN or infinite. flag[0]
// must be 0 on entry; every writer writes the same value, so the races are
// benign and the result is deterministic.
extern "C" __global__ void nonfinite(const float* x, u64 n, const float* scalar, u32* flag) {
    bool bad = false;
    for (u64 i = gs_start(); i < n; i += gs_stride()) bad |= !isfinite(x[i]);
    if (scalar && gs_start() == 0) bad |= !isfinite(scalar[0]);
    if (bad) flag[0] = 1u;
}

// Mirrors vecops::axpby: y = beta y + alpha x; beta = 0 overwrites y (NaN
// included): y = alpha x.
extern "C" __global__ void axpby(float* y, const float* x, u64 n, float alpha, float beta) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        y[i] = beta == 0.0f ? alpha * x[i] : beta * y[i] + alpha * x[i];
    }
}

// Mirrors vecops::add: y = a + b (the residual join).
extern "C" __global__ void add(float* y, const float* a, const float* b, u64 n) {
    for (u64 i = gs_start(); i < n; i += gs_stride()) y[i] = a[i] + b[i];
}

// dst = src unless skip (nullable) has a flag set (skip[0] | skip[1], as
// opt_update): a deferred step's batch-norm running statistics are
// committed on the device only if the step was accepted. What
// Objective::commit does on the host (a copy).
extern "C" __global__ void copy_unless(float* dst, const float* src, u64 n, const u32* skip) {
    if (skip && (skip[0] | skip[1])) return;
    for (u64 i = gs_start(); i < n; i += gs_stride()) dst[i] = src[i];
}
