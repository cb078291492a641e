// The kernels of gpu/kernels/*.cu, each declared once, here: its Rust name,
// its C name, and the shape of its launch (gpu/src/grid.rs: LaunchShape),
// grouped by the file that defines it. Its parameters are declared once too,
// in the .cu file: gpu/build.rs reads them from the C signature.
//
// Read, with a macro of their own, by gpu/src/kernels.rs (the Module and
// Kernel enums the device path uses: NVRTC programs, PTX entry names,
// launch configurations), by gpu/build.rs (one typed launch function per
// kernel, gpu/src/launchers.rs: `typed::<name>`) and by
// gpu/cpu-runtime/build.rs (one CPU launcher per kernel). Adding a kernel:
// write it in its .cu file and add its line here; call `typed::<name>` where
// it is used, and compare it with the Rust it mirrors in
// gpu/src/cuda_c_tests.rs (every_kernel_is_compared fails until it is).
kernel_table! {
    "act.cu" as Act: "bias + activation, activation derivatives, R-operator terms, column and channel sums" {
        BiasAct = bias_act: Elementwise,
        ActMap = act_map: Elementwise,
        ActBackward = act_backward: Elementwise,
        RAct = r_act: Elementwise,
        RActBackward = r_act_backward: Elementwise,
        ColSum = col_sum: ColSum,
        ChanSum = chan_sum: PerChannel,
    }
    "loss.cu" as Loss: "softmax-CE / MSE value and gradient, loss Hessian, accuracy" {
        LossRows = loss_rows: PerRow,
        LossHvp = loss_hvp: PerRow,
        CountCorrect = count_correct: PerRow,
    }
    "vecops.cu" as Vecops: "axpy, waxpy, scale, dot, reductions, finiteness" {
        Axpy = axpy: Elementwise,
        Waxpy = waxpy: Elementwise,
        Scale = scale: Elementwise,
        DotPartial = dot_partial: DotPartial,
        ReduceSum = reduce_sum: OneBlock,
        NonFinite = nonfinite: Elementwise,
        Axpby = axpby: Elementwise,
        Add = add: Elementwise,
        CopyUnless = copy_unless: Elementwise,
    }
    "optim.cu" as Optim: "the fused optimizer update (SGD, Adam, AdamW) and deferred-step bookkeeping" {
        OptUpdate = opt_update: Elementwise,
        CommitStep = commit_step: Single,
    }
    "data.cu" as Data: "mini-batch gather from the resident data set, with crop + flip augmentation" {
        GatherRows = gather_rows: Elementwise,
        GatherCrop = gather_crop: Elementwise,
    }
    "conv.cu" as Conv: "im2col, col2im and the NCHW / channel-major layout changes of the GEMM convolution" {
        Im2col = im2col: Elementwise,
        Col2im = col2im: Elementwise,
        ToCnp = to_cnp: Elementwise,
        FromCnp = from_cnp: Elementwise,
    }
    "norm.cu" as Norm: "batch norm: statistics, normalisation, backward, R-forward, R-backward" {
        BnStats = bn_stats: PerChannel,
        BnApply = bn_apply: Elementwise,
        BnBwdSums = bn_bwd_sums: PerChannel,
        BnBwdDx = bn_bwd_dx: Elementwise,
        BnRfwdSums = bn_rfwd_sums: PerChannel,
        BnRfwdApply = bn_rfwd_apply: Elementwise,
        BnRbwdSums = bn_rbwd_sums: PerChannel,
        BnRbwdDx = bn_rbwd_dx: Elementwise,
    }
    "pool.cu" as Pool: "max / average pooling, backward, R-forward" {
        PoolFwd = pool_fwd: Elementwise,
        PoolBwd = pool_bwd: Elementwise,
        PoolR = pool_r: Elementwise,
    }
}
