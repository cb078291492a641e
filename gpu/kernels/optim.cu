// The optimizer update (every rule in one kernel) and the on-device
// bookkeeping of deferred steps.
// Mirrors fdgr_kernel::optim; compiled after common.cuh.

// Mirrors optim::update_slices: one fused pass of the optimizer's rule
// over theta, d and its state vectors s0, s1.
// SGD (rule RULE_SGD) mirrors optim::sgd_elem line by line, PyTorch's SGD:
//   d = d + wd theta                        (wd != 0)
//   v = d (first step) or mu v + d          (v = s0 != 0 and mu != 0)
//   d = d + mu v (Nesterov) or v            (v != 0 and mu != 0)
//   theta = theta - lr d
// Adam / AdamW (RULE_ADAM, RULE_ADAMW) mirror optim::adam_elem, PyTorch's
// order of operations; the host computes step_size = lr/(1 - beta1^t),
// bc2_sqrt = sqrt(1 - beta2^t), omb1 = 1 - beta1, omb2 = 1 - beta2 and
// decay = 1 - lr wd in double precision, as torch.optim does:
//   theta = theta decay (AdamW) or d = d + wd theta (Adam)   (wd != 0)
//   m = lerp(m, d, omb1); v = v beta2 + (omb2 d) d
//   theta = theta + (-step_size) m / (sqrt(v) / bc2_sqrt + eps)
// s0, s1: nullable (SGD without momentum; unused by SGD). skip: nullable;
// when skip[0] | skip[1] is non-zero nothing is written: that is how a
// step queued without a host round trip is rejected on the device
// (GpuTrainer::step_async), leaving theta and the state exactly as they
// were.
extern "C" __global__ void opt_update(float* theta, const float* d, float* s0, float* s1, u64 n,
                                      int rule, float lr, float mu, int nesterov, float wd,
                                      int first, float beta2, float eps,
                                      float omb1, float omb2, float step_size, float bc2_sqrt,
                                      float decay, const u32* skip) {
    if (skip && (skip[0] | skip[1])) return;
    if (rule == RULE_SGD) {
        float* v = s0;
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
        return;
    }
    if (!s0 || !s1) return;
    const int small = omb1 < 0.5f && omb1 > -0.5f;
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        float t = theta[i];
        float g = d[i];
        if (wd != 0.0f) {
            if (rule == RULE_ADAMW) {
                t = t * decay;
            } else {
                g += wd * t;
            }
        }
        const float m0 = s0[i];
        const float m = small ? m0 + omb1 * (g - m0) : g - (g - m0) * (1.0f - omb1);
        const float v = s1[i] * beta2 + omb2 * g * g;
        s0[i] = m;
        s1[i] = v;
        const float denom = sqrtf(v) / bc2_sqrt + eps;
        theta[i] = t + (-step_size) * m / denom;
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
