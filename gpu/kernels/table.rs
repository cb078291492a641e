// The kernels of gpu/kernels/*.cu, each declared once, here: its Rust name,
// its C name, and the shape of its launch (gpu/src/launch.rs: LaunchShape),
// grouped by the file that defines it. Its parameters are declared once too,
// in the .cu file (the CPU build takes them from the C++ compiler).
//
// Read, with a macro of their own, by gpu/src/kernels.rs (the Module and
// Kernel enums the device path uses: NVRTC programs, PTX entry names,
// launch configurations) and by gpu/cpu-runtime/build.rs (one CPU launcher
// per kernel). Adding a kernel: write it in its .cu file, add its line
// here, call it from gpu/src/ops.rs, and compare it with the Rust it
// mirrors in gpu/src/cuda_c_tests.rs (every_kernel_is_compared fails
// until it is).
kernel_table! {
    "act.cu" as Act: "bias + activation, activation derivatives, R-operator terms, column sums" {
        BiasAct = bias_act: Elementwise,
        ActBackward = act_backward: Elementwise,
        RBiasAct = r_bias_act: Elementwise,
        RActBackward = r_act_backward: Elementwise,
        ColSum = col_sum: ColSum,
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
    }
    "optim.cu" as Optim: "the fused optimizer update (SGD, Adam, AdamW) and deferred-step bookkeeping" {
        OptUpdate = opt_update: Elementwise,
        CommitStep = commit_step: Single,
    }
    "data.cu" as Data: "mini-batch gather from the resident data set" {
        GatherRows = gather_rows: Elementwise,
    }
}
