// The codes the CUDA C shares with fdgr-kernel's enums, written as C
// `#define`s (the program's "codes.cuh", compiled before common.cuh). This
// file is included by gpu/src/kernels.rs (NVRTC) and by
// gpu/cpu-runtime/build.rs (the host C++ compiler), so both compile the
// same codes, and a new optimizer rule needs no line of C to be named.

/// `#define RULE_<NAME> <code>` for every optimizer rule
/// (`fdgr_kernel::optim::Rule`: `RULE_SGD 0`, `RULE_ADAM 1`, …), what
/// `opt_update` (optim.cu) branches on.
fn codes_cuh() -> String {
    let mut s = String::from("// generated from fdgr_kernel::optim::Rule (gpu/kernels/codes.rs)\n");
    for r in fdgr_kernel::optim::Rule::ALL {
        s.push_str(&format!(
            "#define RULE_{} {}\n",
            r.name().to_ascii_uppercase(),
            r.code()
        ));
    }
    s
}
