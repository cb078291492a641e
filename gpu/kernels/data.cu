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
