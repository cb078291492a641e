// Mini-batches from the data set resident on the device; compiled after
// common.cuh.

// Gathers the mini-batch: xb[r, :] = x[idx[r], :] and yb[r] = labels[idx[r]]
// for r < rows (x is n_samples x n0, row-major). What the host does when it
// copies the batch rows for the CPU kernel's Mlp::set_batch; the indices
// were checked against n_samples on the host.
extern "C" __global__ void gather_rows(const float* x, const u32* labels, const u32* idx,
                                       u32 rows, u32 n0, float* xb, u32* yb) {
    const u64 n = (u64)rows * n0;
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        const u32 r = (u32)(i / n0);
        const u32 c = (u32)(i % n0);
        const u64 src = (u64)idx[r] * n0 + c;
        xb[i] = x[src];
        if (c == 0) yb[r] = labels[idx[r]];
    }
}

// The gather with the CIFAR augmentation of host/src/augment.rs
// (CropFlip::apply_one) applied on the way: sample r is the image idx[r]
// (C planes of H x W) padded by pad, cropped at (top, left) and mirrored
// left-right when flip, where crop[r] = top | left << 10 | flip << 20 was
// drawn on the host by augment::Crop::draw (three draws per sample, in
// batch order: the host's generator, so both backends draw the same crops).
// out[ch, i, j] = x[ch, i + top - pad, jj + left - pad] with jj = w - 1 - j
// when flipped (else j), or fill[ch] (nullable: 0) outside the image. A
// copy: bit for bit what the host computes.
extern "C" __global__ void gather_crop(const float* x, const u32* labels, const u32* idx,
                                       const u32* crop, u32 rows, u32 c, u32 h, u32 w, u32 pad,
                                       const float* fill, float* xb, u32* yb) {
    const u64 hw = (u64)h * w;
    const u64 n0 = (u64)c * hw;
    const u64 n = (u64)rows * n0;
    for (u64 i = gs_start(); i < n; i += gs_stride()) {
        const u32 r = (u32)(i / n0);
        const u64 f = i % n0;
        const u32 ch = (u32)(f / hw);
        const u32 y = (u32)((f % hw) / w);
        const u32 xo = (u32)(f % w);
        const u32 cr = crop[r];
        const long long top = cr & 1023u, left = (cr >> 10) & 1023u;
        const u32 jj = (cr >> 20) & 1u ? w - 1 - xo : xo;
        const long long sy = (long long)y + top - pad;
        const long long sx = (long long)jj + left - pad;
        float v = fill ? fill[ch] : 0.0f;
        if (sy >= 0 && sy < h && sx >= 0 && sx < w) {
            v = x[(u64)idx[r] * n0 + (u64)ch * hw + (u64)sy * w + sx];
        }
        xb[i] = v;
        if (f == 0) yb[r] = labels[idx[r]];
    }
}
