// Batch normalization over NCHW batches (N samples, C channels, HW values
// per plane; M = N HW values per channel). Mirrors
// fdgr_kernel::serial::norm; compiled after common.cuh.
//
// Every pass is split as the Rust is: per-channel sums (one block per
// channel: each thread's strided sum over the channel's values, in sample
// then position order, then block_sum's fixed tree; deterministic, but
// another order than the Rust's left-to-right sum), then an elementwise
// kernel that evaluates the Rust's per-plane formula with those sums term
// for term (bit for bit given the same sums). Channel value e (0 <= e < M)
// is x[(e / hw * c + ch) * hw + e % hw].

__device__ __forceinline__ u64 chan_at(u32 e, u32 c, u32 hw, u32 ch) {
    return ((u64)(e / hw) * c + ch) * hw + e % hw;
}

// Mirrors serial::norm::channel_stats and running_update (forward_train's
// statistics): stats[ch] = mean, stats[c + ch] = 1 / sqrt(var + eps) with
// the biased variance sum (x - mean)^2 / M (two passes, as the Rust, and
// as there in double: the sums, the unrounded mean the second pass
// subtracts, 1 / sqrt, each statistic rounded to float once, as
// serial::norm::finish_stats); when pending != 0, pending[ch],
// pending[c + ch] = the running mean and variance after this batch
// (PyTorch's rule, unbiased variance, in float from the rounded mean and
// sum of squares, from running[ch], running[c + ch]). One block per
// channel.
extern "C" __global__ void bn_stats(const float* x, u32 n, u32 c, u32 hw, float eps,
                                    float* stats, const float* running, float* pending,
                                    float momentum) {
    __shared__ double sh[REDUCE_THREADS];
    const u32 ch = blockIdx.x;
    const u32 m = n * hw;
    const double md = (double)m;
    double s = 0.0;
    for (u32 e = threadIdx.x; e < m; e += REDUCE_THREADS) s += (double)x[chan_at(e, c, hw, ch)];
    const double mu = block_sum_all(sh, s) / md;
    double v = 0.0;
    for (u32 e = threadIdx.x; e < m; e += REDUCE_THREADS) {
        const double d = (double)x[chan_at(e, c, hw, ch)] - mu;
        v += d * d;
    }
    const double m2 = block_sum_all(sh, v);
    if (threadIdx.x == 0) {
        const float muf = (float)mu, m2f = (float)m2;
        stats[ch] = muf;
        stats[c + ch] = (float)(1.0 / sqrt(m2 / md + (double)eps));
        if (pending) {
            const float unbiased = m2f / (float)(m - 1);
            const float keep = 1.0f - momentum;
            pending[ch] = momentum * muf + keep * running[ch];
            pending[c + ch] = momentum * unbiased + keep * running[c + ch];
        }
    }
}

// Mirrors serial::norm::normalize_plane: y = act(gamma ((x - mean) s) + beta)
// over the whole batch (len = N C HW values). Training: stats holds the
// batch mean and s = 1 / sigma (bn_stats). Evaluation (eval != 0): stats
// holds the running mean and variance, and s = 1 / sqrt(var + eps), as
// serial::norm::forward_eval computes it.
extern "C" __global__ void bn_apply(const float* x, float* y, u64 len, u32 c, u32 hw,
                                    const float* gb, const float* stats, int eval, float eps,
                                    int act) {
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u32 ch = (u32)((i / hw) % c);
        const float mu = stats[ch];
        const float is = eval ? 1.0f / sqrtf(stats[c + ch] + eps) : stats[c + ch];
        y[i] = act_f(act, gb[ch] * ((x[i] - mu) * is) + gb[c + ch]);
    }
}

// Mirrors serial::norm::backward_sums and backward's parameter gradients:
// sums[ch] = sum dy, sums[c + ch] = sum dy xhat (xhat = (x - mean) s);
// when dp != 0, dp[ch] = beta dp[ch] + alpha sum dy xhat (d gamma) and
// dp[c + ch] = beta dp[c + ch] + alpha sum dy (d beta), beta = 0
// overwriting (serial::norm::put). One block per channel.
extern "C" __global__ void bn_bwd_sums(const float* x, const float* dy, u32 n, u32 c, u32 hw,
                                       const float* stats, float* sums, float* dp, float alpha,
                                       float beta) {
    __shared__ float sh[REDUCE_THREADS];
    const u32 ch = blockIdx.x;
    const u32 m = n * hw;
    const float mu = stats[ch], is = stats[c + ch];
    float a = 0.0f, b = 0.0f;
    for (u32 e = threadIdx.x; e < m; e += REDUCE_THREADS) {
        const u64 i = chan_at(e, c, hw, ch);
        a += dy[i];
        b += dy[i] * ((x[i] - mu) * is);
    }
    const float sdy = block_sum_all(sh, a);
    const float sdyx = block_sum_all(sh, b);
    if (threadIdx.x == 0) {
        sums[ch] = sdy;
        sums[c + ch] = sdyx;
        if (dp) {
            dp[ch] = beta == 0.0f ? alpha * sdyx : beta * dp[ch] + alpha * sdyx;
            dp[c + ch] = beta == 0.0f ? alpha * sdy : beta * dp[c + ch] + alpha * sdy;
        }
    }
}

// Mirrors serial::norm::backward_plane over the batch:
// dx (+)= gamma s (dy - sum dy / M - xhat sum dy xhat / M), with the sums of
// bn_bwd_sums; acc != 0 adds to dx.
extern "C" __global__ void bn_bwd_dx(const float* x, const float* dy, float* dx, u64 len, u32 n,
                                     u32 c, u32 hw, const float* gb, const float* stats,
                                     const float* sums, int acc) {
    const float mf = (float)(n * hw);
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u32 ch = (u32)((i / hw) % c);
        const float mu = stats[ch], is = stats[c + ch];
        const float k = gb[ch] * is;
        const float mdy = sums[ch] / mf, mdyx = sums[c + ch] / mf;
        const float v = k * (dy[i] - mdy - ((x[i] - mu) * is) * mdyx);
        dx[i] = acc ? dx[i] + v : v;
    }
}

// Mirrors serial::norm::r_forward_means: rstats[ch] = mean R{x},
// rstats[c + ch] = mean xhat R{x}; both 0 when rx is null (R{x} = 0).
// One block per channel.
extern "C" __global__ void bn_rfwd_sums(const float* x, const float* rx, u32 n, u32 c, u32 hw,
                                        const float* stats, float* rstats) {
    __shared__ float sh[REDUCE_THREADS];
    const u32 ch = blockIdx.x;
    const u32 m = n * hw;
    const float mu = stats[ch], is = stats[c + ch];
    float a = 0.0f, b = 0.0f;
    if (rx) {
        for (u32 e = threadIdx.x; e < m; e += REDUCE_THREADS) {
            const u64 i = chan_at(e, c, hw, ch);
            a += rx[i];
            b += ((x[i] - mu) * is) * rx[i];
        }
    }
    const float sa = block_sum_all(sh, a);
    const float sb = block_sum_all(sh, b);
    if (threadIdx.x == 0) {
        const float mf = (float)m;
        rstats[ch] = rx ? sa / mf : 0.0f;
        rstats[c + ch] = rx ? sb / mf : 0.0f;
    }
}

// Mirrors serial::norm::r_forward_plane over the batch:
// R{y} = V_gamma xhat + gamma R{xhat} + V_beta with
// R{xhat} = s (R{x} - mean R{x} - xhat mean xhat R{x}); without R{x}
// (rx null): R{y} = V_gamma xhat + V_beta.
extern "C" __global__ void bn_rfwd_apply(const float* x, const float* rx, float* ry, u64 len,
                                         u32 c, u32 hw, const float* gb, const float* vgb,
                                         const float* stats, const float* rstats) {
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u32 ch = (u32)((i / hw) % c);
        const float mu = stats[ch], is = stats[c + ch];
        const float vga = vgb[ch], vbe = vgb[c + ch];
        if (rx) {
            const float xh = (x[i] - mu) * is;
            const float rxh = is * (rx[i] - rstats[ch] - xh * rstats[c + ch]);
            ry[i] = vga * xh + gb[ch] * rxh + vbe;
        } else {
            ry[i] = vga * ((x[i] - mu) * is) + vbe;
        }
    }
}

// R{xhat} at value i (serial::norm's rxh_at): 0 without R{x}.
__device__ __forceinline__ float rxh_at(const float* rx, u64 i, float xh, float is, float ma,
                                        float mb) {
    return rx ? is * (rx[i] - ma - xh * mb) : 0.0f;
}

// Mirrors serial::norm::r_backward_sums and r_backward's parameter part:
// sums5[k c + ch] for k = 0..4 = sum dy, sum dy xhat, sum R{dy},
// sum R{dy} xhat, sum dy R{xhat}; rsums[ch] = R{d gamma} = sum R{dy} xhat +
// sum dy R{xhat}, rsums[c + ch] = R{d beta} = sum R{dy}. rx nullable.
// One block per channel.
extern "C" __global__ void bn_rbwd_sums(const float* x, const float* rx, const float* dy,
                                        const float* rdy, u32 n, u32 c, u32 hw,
                                        const float* stats, const float* rstats, float* sums5,
                                        float* rsums) {
    __shared__ float sh[REDUCE_THREADS];
    const u32 ch = blockIdx.x;
    const u32 m = n * hw;
    const float mu = stats[ch], is = stats[c + ch];
    const float ma = rstats[ch], mb = rstats[c + ch];
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f;
    for (u32 e = threadIdx.x; e < m; e += REDUCE_THREADS) {
        const u64 i = chan_at(e, c, hw, ch);
        const float xh = (x[i] - mu) * is;
        s0 += dy[i];
        s1 += dy[i] * xh;
        s2 += rdy[i];
        s3 += rdy[i] * xh;
        s4 += dy[i] * rxh_at(rx, i, xh, is, ma, mb);
    }
    const float t0 = block_sum_all(sh, s0);
    const float t1 = block_sum_all(sh, s1);
    const float t2 = block_sum_all(sh, s2);
    const float t3 = block_sum_all(sh, s3);
    const float t4 = block_sum_all(sh, s4);
    if (threadIdx.x == 0) {
        sums5[ch] = t0;
        sums5[c + ch] = t1;
        sums5[2 * c + ch] = t2;
        sums5[3 * c + ch] = t3;
        sums5[4 * c + ch] = t4;
        rsums[ch] = t3 + t4;
        rsums[c + ch] = t2;
    }
}

// Mirrors serial::norm::r_backward_plane over the batch, with the sums of
// bn_rbwd_sums: R{dx} (+)= R{s} (g - mean g - xhat mean g xhat)
//   + s (R{g} - mean R{g} - R{xhat} mean g xhat
//        - xhat (mean R{g} xhat + mean g R{xhat})),
// g = gamma dy, R{g} = V_gamma dy + gamma R{dy}, R{s} = -s^2 mean xhat R{x}.
extern "C" __global__ void bn_rbwd_dx(const float* x, const float* rx, const float* dy,
                                      const float* rdy, float* rdx, u64 len, u32 n, u32 c,
                                      u32 hw, const float* gb, const float* vgb,
                                      const float* stats, const float* rstats,
                                      const float* sums5, int acc) {
    const float mf = (float)(n * hw);
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u32 ch = (u32)((i / hw) % c);
        const float mu = stats[ch], is = stats[c + ch];
        const float ga = gb[ch], vga = vgb[ch];
        const float ma = rstats[ch], mb = rstats[c + ch];
        const float sdy = sums5[ch], sdyx = sums5[c + ch], srdy = sums5[2 * c + ch];
        const float srdyx = sums5[3 * c + ch], sdyrxh = sums5[4 * c + ch];
        const float rs = -(is * is) * mb;
        const float mg = ga * sdy / mf;
        const float mgx = ga * sdyx / mf;
        const float mrg = (vga * sdy + ga * srdy) / mf;
        const float mrgx = (vga * sdyx + ga * srdyx) / mf;
        const float mgrx = ga * sdyrxh / mf;
        const float xh = (x[i] - mu) * is;
        const float gi = ga * dy[i];
        const float rgi = vga * dy[i] + ga * rdy[i];
        const float v = rs * (gi - mg - xh * mgx) +
                        is * (rgi - mrg - rxh_at(rx, i, xh, is, ma, mb) * mgx -
                              xh * (mrgx + mgrx));
        rdx[i] = acc ? rdx[i] + v : v;
    }
}
