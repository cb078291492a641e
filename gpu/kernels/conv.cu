// The convolution path that needs no library beyond cuBLAS: im2col, its
// adjoint col2im, and the two layout changes between the NCHW batch and the
// channel-major matrices the GEMMs see (gpu/src/conv.rs drives them; with
// cuDNN present the convolutions run there instead). Compiled after
// common.cuh.
//
// Column matrix of a chunk of nc samples (n0 .. n0 + nc - 1) and group grp:
// rows r = (ic, ky, kx) of the group's cg input channels, cg k^2 of them;
// columns (j, p) = (sample n0 + j, output position p), nc OH OW of them:
//   col[r * (nc * ohw) + j * ohw + p].
// For one sample (nc = 1) this is serial::conv::im2col's layout.

// Mirrors serial::conv::im2col for samples n0 .. n0 + nc - 1 at once:
// col = the input value under tap (ky, kx) of output position p, 0 where
// the window leaves the input (zero padding). A copy: bit for bit.
extern "C" __global__ void im2col(const float* x, float* col, u32 n0, u32 nc, u32 c, u32 h,
                                  u32 w, u32 cg, u32 grp, u32 k, u32 stride, u32 pad, u32 oh,
                                  u32 ow) {
    const u64 ohw = (u64)oh * ow;
    const u64 total = (u64)cg * k * k * nc * ohw;
    for (u64 i = gs_start(); i < total; i += gs_stride()) {
        const u32 p = (u32)(i % ohw);
        const u64 t = i / ohw;
        const u32 j = (u32)(t % nc);
        const u32 r = (u32)(t / nc);
        const u32 kx = r % k;
        const u32 ky = (r / k) % k;
        const u32 ic = r / (k * k);
        const long long iy = (long long)(p / ow) * stride + ky - pad;
        const long long ix = (long long)(p % ow) * stride + kx - pad;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
            v = x[(((u64)(n0 + j) * c + (u64)grp * cg + ic) * h + iy) * w + ix];
        }
        col[i] = v;
    }
}

// Mirrors serial::conv::col2im_add after vecops::scale_or_zero(dx, beta):
// each input value of group grp of samples n0 .. n0 + nc - 1 becomes
// beta dx (0 when beta = 0, NaN included) plus the column entries of every
// tap that reads it, added in tap order (ky, then kx), as the Rust adds
// them. A gather, one thread per input value: no atomics, bit for bit.
extern "C" __global__ void col2im(const float* col, float* dx, u32 n0, u32 nc, u32 c, u32 h,
                                  u32 w, u32 cg, u32 grp, u32 k, u32 stride, u32 pad, u32 oh,
                                  u32 ow, float beta) {
    const u64 hw = (u64)h * w;
    const u64 ohw = (u64)oh * ow;
    const u64 cols = (u64)nc * ohw;
    const u64 total = (u64)nc * cg * hw;
    for (u64 i = gs_start(); i < total; i += gs_stride()) {
        const u32 ix = (u32)(i % w);
        const u32 iy = (u32)((i / w) % h);
        const u32 ic = (u32)((i / hw) % cg);
        const u32 j = (u32)(i / (hw * cg));
        const u64 at = (((u64)(n0 + j) * c + (u64)grp * cg + ic) * h + iy) * w + ix;
        float s = beta == 0.0f ? 0.0f : beta * dx[at];
        for (u32 ky = 0; ky < k; ++ky) {
            const long long ty = (long long)iy + pad - ky;
            if (ty < 0 || ty % stride != 0 || ty / stride >= oh) continue;
            const u32 oy = (u32)(ty / stride);
            for (u32 kx = 0; kx < k; ++kx) {
                const long long tx = (long long)ix + pad - kx;
                if (tx < 0 || tx % stride != 0 || tx / stride >= ow) continue;
                const u32 ox = (u32)(tx / stride);
                const u64 r = ((u64)ic * k + ky) * k + kx;
                s += col[r * cols + (u64)j * ohw + (u64)oy * ow + ox];
            }
        }
        dx[at] = s;
    }
}

// Layout change NCHW -> channel-major: dst[kc, j, p] = src[n0 + j, kc, p]
// for nc samples of kk channels of np positions (the gradient of a
// convolution's output, as the GEMMs read it). A copy: bit for bit.
extern "C" __global__ void to_cnp(const float* src, float* dst, u32 n0, u32 nc, u32 kk, u32 np) {
    const u64 total = (u64)kk * nc * np;
    for (u64 i = gs_start(); i < total; i += gs_stride()) {
        const u32 p = (u32)(i % np);
        const u32 j = (u32)((i / np) % nc);
        const u32 kc = (u32)(i / ((u64)np * nc));
        dst[i] = src[((u64)(n0 + j) * kk + kc) * np + p];
    }
}

// Layout change channel-major -> NCHW with the output's beta:
// dst[n0 + j, kc, p] = src[kc, j, p] (beta = 0, NaN included) or
// beta dst + src; src holds alpha conv(x, w) from the GEMM, so this is the
// last operation of serial::conv::forward's `beta y + alpha s`.
extern "C" __global__ void from_cnp(const float* src, float* dst, u32 n0, u32 nc, u32 kk, u32 np,
                                    float beta) {
    const u64 total = (u64)nc * kk * np;
    for (u64 i = gs_start(); i < total; i += gs_stride()) {
        const u32 p = (u32)(i % np);
        const u32 kc = (u32)((i / np) % kk);
        const u32 j = (u32)(i / ((u64)np * kk));
        const float v = src[((u64)kc * nc + j) * np + p];
        const u64 at = ((u64)(n0 + j) * kk + kc) * np + p;
        dst[at] = beta == 0.0f ? v : beta * dst[at] + v;
    }
}
