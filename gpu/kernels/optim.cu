// The optimizer update and the on-device bookkeeping of deferred steps.
// Mirrors fdgr_kernel::optim; compiled after common.cuh.

// Mirrors optim::sgd_elem line by line, over the whole vector (as
// optim::sgd_slices): PyTorch's SGD in one fused pass over theta, d and v.
//   d = d + wd theta                        (wd != 0)
//   v = d (first step) or mu v + d          (v != 0 and mu != 0)
//   d = d + mu v (Nesterov) or v            (v != 0 and mu != 0)
//   theta = theta - lr d
// v: nullable (no momentum buffer). skip: nullable; when skip[0] | skip[1]
// is non-zero nothing is written: that is how a step queued without a host
// round trip is rejected on the device (GpuTrainer::step_async), leaving
// theta and v exactly as they were.
extern "C" __global__ void sgd_update(float* theta, const float* d, float* v, u64 n, float lr,
                                      float mu, int nesterov, float wd, int first,
                                      const u32* skip) {
    if (skip && (skip[0] | skip[1])) return;
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        const float t = theta[i];
        float di = d[i];
        if (wd != 0.0f) di += wd * t;
        if (v && mu != 0.0f) {
            const float vi = first ? di : mu * v[i] + di;
            v[i] = vi;
            di = nesterov ? di + mu * vi : vi;
        }
        theta[i] = t - lr * di;
    }
}

// After a deferred step (one thread): flags[0] is this step's non-finite
// flag (kernel nonfinite); flags[1] is the sticky "halted" flag. The first
// rejected step sets flags[1] and records its index (flags[2] low 32 bits,
// flags[3] high 32 bits) so the host can roll SgdState::steps back to the
// updates really applied; every later queued update is skipped until the
// host reads and clears the flags. Resets flags[0] for the next step.
extern "C" __global__ void commit_step(u32* flags, u32 step_lo, u32 step_hi) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (flags[0] != 0u && flags[1] == 0u) {
        flags[1] = 1u;
        flags[2] = step_lo;
        flags[3] = step_hi;
    }
    flags[0] = 0u;
}
