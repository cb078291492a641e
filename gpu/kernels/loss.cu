// Losses on the network outputs: the fused softmax cross-entropy (or MSE)
// value and gradient, the loss Hessian times a direction (R-operator), and
// the accuracy count. Mirrors fdgr_kernel::loss; compiled after common.cuh.
//
// One thread per sample row, running the Rust loop of that row as written
// (the same order of operations), so a row's loss and gradient match the
// CPU's to the rounding of expf/logf. The mean over rows is the one-block
// fixed-order reduce_sum of vecops.cu.

// Mirrors loss::loss_grad for one row each: row_loss[r] = this row's term
// of the total, and, when delta != 0, delta[r, :] = dL/d out[r, :] (with
// the 1/B of the mean, B = rows). Class targets (one-hot for MSE).
// Softmax CE (loss::log_sum_exp, then the kernel's grouping):
//   m = max z, ls = log sum exp(z - m), term = (m - z_y) + ls,
//   delta_j = (exp((z_j - m) - ls) - [j = y]) / B.
//   (m - z_y) + ls, not (m + ls) - z_y: a confident, correct row (z_y = m)
//   keeps every digit of its small loss.
// MSE: term = sum_j (z_j - t_j)^2, delta_j = 2 (z_j - t_j) / (B K).
// delta: nullable (loss without gradient).
extern "C" __global__ void loss_rows(int loss, const float* out, const u32* labels, u32 rows,
                                     u32 k, float* delta, float* row_loss) {
    const u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* z = out + (u64)r * k;
    float* d = delta ? delta + (u64)r * k : 0;
    const u32 y = labels[r];
    if (loss == LOSS_SOFTMAX_CE) {
        const float inv_b = 1.0f / (float)rows;
        float m = z[0];
        for (u32 j = 1; j < k; ++j) {
            if (z[j] > m) m = z[j];
        }
        float s = 0.0f;
        for (u32 j = 0; j < k; ++j) s += expf(z[j] - m);
        const float ls = logf(s);
        row_loss[r] = (m - z[y]) + ls;
        if (d) {
            for (u32 j = 0; j < k; ++j) {
                const float p = expf((z[j] - m) - ls);
                const float yj = j == y ? 1.0f : 0.0f;
                d[j] = (p - yj) * inv_b;
            }
        }
    } else {
        const float inv_n = 1.0f / (float)((u64)rows * k);
        const float two_inv_n = 2.0f * inv_n;
        float total = 0.0f;
        for (u32 j = 0; j < k; ++j) {
            const float e = z[j] - (j == y ? 1.0f : 0.0f);
            total += e * e;
            if (d) d[j] = two_inv_n * e;
        }
        row_loss[r] = total;
    }
}

// Mirrors loss::loss_hvp for one row each: h = H_loss r, the first step of
// the R-backward in mlp::r_pass.
// Softmax CE: p_j = exp((z_j - m) - ls) as in loss_rows,
//   h_j = p_j (r_j - p.r) / B; MSE: h = 2 r / (B K).
extern "C" __global__ void loss_hvp(int loss, const float* out, u32 rows, u32 k,
                                    const float* rv, float* h) {
    const u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const u64 o = (u64)r * k;
    const float* z = out + o;
    const float* rr = rv + o;
    float* hh = h + o;
    if (loss == LOSS_SOFTMAX_CE) {
        const float inv_b = 1.0f / (float)rows;
        float m = z[0];
        for (u32 j = 1; j < k; ++j) {
            if (z[j] > m) m = z[j];
        }
        float s = 0.0f;
        for (u32 j = 0; j < k; ++j) s += expf(z[j] - m);
        const float ls = logf(s);
        float pr = 0.0f;
        for (u32 j = 0; j < k; ++j) pr += expf((z[j] - m) - ls) * rr[j];
        for (u32 j = 0; j < k; ++j) {
            const float p = expf((z[j] - m) - ls);
            hh[j] = p * (rr[j] - pr) * inv_b;
        }
    } else {
        const float two_inv_n = 2.0f / (float)((u64)rows * k);
        for (u32 j = 0; j < k; ++j) hh[j] = two_inv_n * rr[j];
    }
}

// Mirrors mlp::correct (with loss::argmax, first index on ties): adds to
// *count the number of rows whose arg-max equals the label.
extern "C" __global__ void count_correct(const float* out, const u32* labels, u32 rows, u32 k,
                                         u32* count) {
    const u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* z = out + (u64)r * k;
    u32 best = 0;
    for (u32 j = 0; j < k; ++j) {
        if (z[j] > z[best]) best = j;
    }
    if (best == labels[r]) atomicAdd(count, 1u);
}
