// Max and average pooling over NCHW batches (planes of H x W, windows
// kh x kw, one stride and one padding for both axes), their backward pass
// and the R-forward. Mirrors fdgr_kernel::serial::pool (average pooling
// counts the padding, max pooling takes the first maximum of the window);
// compiled after common.cuh. Codes: kind 0 = max, 1 = average
// (gpu/src/ops.rs: pool_code).

#define POOL_MAX 0

struct PoolG {
    u32 h, w, kh, kw, stride, pad, oh, ow;
};

// serial::pool::PoolGeom::span: the input rows (or columns) [lo, hi) of
// output coordinate o along an axis of length len with window k.
__device__ __forceinline__ void pool_span(u32 o, u32 k, u32 len, u32 stride, u32 pad, u32* lo,
                                          u32* hi) {
    const u32 start = o * stride;
    *lo = start > pad ? start - pad : 0;
    const u32 e = start + k > pad ? start + k - pad : 0;
    *hi = e < len ? e : len;
}

// serial::pool::argmax: index in the plane of the first maximum of output
// (oy, ox)'s window.
__device__ __forceinline__ u32 pool_argmax(const PoolG& g, const float* x, u32 oy, u32 ox) {
    u32 y0, y1, x0, x1;
    pool_span(oy, g.kh, g.h, g.stride, g.pad, &y0, &y1);
    pool_span(ox, g.kw, g.w, g.stride, g.pad, &x0, &x1);
    u32 best = y0 * g.w + x0;
    for (u32 iy = y0; iy < y1; ++iy) {
        for (u32 ix = x0; ix < x1; ++ix) {
            const u32 i = iy * g.w + ix;
            if (x[i] > x[best]) best = i;
        }
    }
    return best;
}

// serial::pool::forward_plane at one output: the window's maximum, or its
// sum (rows then columns, left to right) times 1 / (kh kw).
__device__ __forceinline__ float pool_out(const PoolG& g, const float* x, u32 oy, u32 ox,
                                          int kind) {
    if (kind == POOL_MAX) return x[pool_argmax(g, x, oy, ox)];
    const float inv = 1.0f / (float)(g.kh * g.kw);
    u32 y0, y1, x0, x1;
    pool_span(oy, g.kh, g.h, g.stride, g.pad, &y0, &y1);
    pool_span(ox, g.kw, g.w, g.stride, g.pad, &x0, &x1);
    float s = 0.0f;
    for (u32 iy = y0; iy < y1; ++iy) {
        for (u32 ix = x0; ix < x1; ++ix) s += x[iy * g.w + ix];
    }
    return s * inv;
}

// Mirrors serial::pool::forward: y = pool(x), one thread per output value
// (len = planes OH OW). Bit for bit.
extern "C" __global__ void pool_fwd(const float* x, float* y, u64 len, u32 h, u32 w, u32 kh,
                                    u32 kw, u32 stride, u32 pad, u32 oh, u32 ow, int kind) {
    const PoolG g = {h, w, kh, kw, stride, pad, oh, ow};
    const u64 ohw = (u64)oh * ow;
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u64 plane = i / ohw;
        const u32 o = (u32)(i % ohw);
        y[i] = pool_out(g, x + plane * h * w, o / ow, o % ow, kind);
    }
}

// Mirrors serial::pool::r_forward: R{y} = R{x} at the arg-max of x (max),
// or pool(R{x}) (average). Bit for bit.
extern "C" __global__ void pool_r(const float* x, const float* rx, float* ry, u64 len, u32 h,
                                  u32 w, u32 kh, u32 kw, u32 stride, u32 pad, u32 oh, u32 ow,
                                  int kind) {
    const PoolG g = {h, w, kh, kw, stride, pad, oh, ow};
    const u64 ohw = (u64)oh * ow;
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u64 plane = i / ohw;
        const u32 o = (u32)(i % ohw);
        const u64 base = plane * h * w;
        if (kind == POOL_MAX) {
            ry[i] = rx[base + pool_argmax(g, x + base, o / ow, o % ow)];
        } else {
            ry[i] = pool_out(g, rx + base, o / ow, o % ow, kind);
        }
    }
}

// Mirrors serial::pool::backward: dx (+)= pool^T(dy) (acc != 0 adds to dx,
// else dx starts from 0). A gather, one thread per input value (len =
// planes H W): it visits the windows that contain it in the order the Rust
// scatters them (oy, then ox, ascending) and adds dy (max: where it is the
// window's arg-max) or dy / (kh kw) (average), as the Rust adds them: bit
// for bit, no atomics.
extern "C" __global__ void pool_bwd(const float* x, const float* dy, float* dx, u64 len, u32 h,
                                    u32 w, u32 kh, u32 kw, u32 stride, u32 pad, u32 oh, u32 ow,
                                    int kind, int acc) {
    const PoolG g = {h, w, kh, kw, stride, pad, oh, ow};
    const u64 hw = (u64)h * w;
    const float inv = 1.0f / (float)(kh * kw);
    for (u64 i = gs_start(); i < len; i += gs_stride()) {
        const u64 plane = i / hw;
        const u32 at = (u32)(i % hw);
        const u32 iy = at / w, ix = at % w;
        // outputs whose window [o stride - pad, o stride - pad + k) holds iy
        const u32 ylo = iy + pad + 1 > kh ? (iy + pad + 1 - kh + stride - 1) / stride : 0;
        const u32 yhi = (iy + pad) / stride;
        const u32 xlo = ix + pad + 1 > kw ? (ix + pad + 1 - kw + stride - 1) / stride : 0;
        const u32 xhi = (ix + pad) / stride;
        const float* xp = x + plane * hw;
        const float* dyp = dy + plane * (u64)oh * ow;
        float s = acc ? dx[i] : 0.0f;
        for (u32 oy = ylo; oy <= yhi && oy < oh; ++oy) {
            for (u32 ox = xlo; ox <= xhi && ox < ow; ++ox) {
                const float d = dyp[oy * ow + ox];
                if (kind == POOL_MAX) {
                    if (pool_argmax(g, xp, oy, ox) == at) s += d;
                } else {
                    s += d * inv;
                }
            }
        }
        dx[i] = s;
    }
}
