//! The CUDA C sources in `gpu/kernels/`, the kernels they define, and
//! their compilation to PTX with NVRTC at run time.
//!
//! Each `.cu` file is one NVRTC program: [`COMMON`] (common.cuh) followed
//! by the file. Kernels are `extern "C"` so their PTX entry names are their
//! C names.

use crate::error::GpuError;

/// `gpu/kernels/common.cuh`: activations, codes, reductions, prepended to
/// every file.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// One `.cu` file of `gpu/kernels/`, compiled as one module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Module {
    /// act.cu: bias + activation, activation derivatives, R-op terms, column sums.
    Act,
    /// loss.cu: softmax-CE / MSE value and gradient, loss Hessian, accuracy.
    Loss,
    /// vecops.cu: axpy, waxpy, scale, dot, reductions, finiteness.
    Vecops,
    /// optim.cu: the fused SGD update and deferred-step bookkeeping.
    Optim,
    /// data.cu: mini-batch gather from the resident data set.
    Data,
}

impl Module {
    /// Every module.
    pub const ALL: [Module; 5] = [
        Module::Act,
        Module::Loss,
        Module::Vecops,
        Module::Optim,
        Module::Data,
    ];

    /// File name in `gpu/kernels/`.
    pub fn file(self) -> &'static str {
        match self {
            Module::Act => "act.cu",
            Module::Loss => "loss.cu",
            Module::Vecops => "vecops.cu",
            Module::Optim => "optim.cu",
            Module::Data => "data.cu",
        }
    }

    /// The file's text.
    pub fn source(self) -> &'static str {
        match self {
            Module::Act => include_str!("../kernels/act.cu"),
            Module::Loss => include_str!("../kernels/loss.cu"),
            Module::Vecops => include_str!("../kernels/vecops.cu"),
            Module::Optim => include_str!("../kernels/optim.cu"),
            Module::Data => include_str!("../kernels/data.cu"),
        }
    }

    /// The NVRTC program: common.cuh, then the file (with `#line`
    /// directives so compiler messages name the right file and line).
    pub fn program(self) -> String {
        format!(
            "#line 1 \"common.cuh\"\n{}\n#line 1 \"{}\"\n{}",
            COMMON,
            self.file(),
            self.source()
        )
    }

    /// The kernels this module defines.
    pub fn kernels(self) -> impl Iterator<Item = Kernel> {
        Kernel::ALL.into_iter().filter(move |k| k.module() == self)
    }
}

/// A kernel of `gpu/kernels/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Kernel {
    BiasAct,
    ActBackward,
    RBiasAct,
    RActBackward,
    ColSum,
    LossRows,
    LossHvp,
    CountCorrect,
    Axpy,
    Waxpy,
    Scale,
    DotPartial,
    ReduceSum,
    NonFinite,
    SgdUpdate,
    CommitStep,
    GatherRows,
}

impl Kernel {
    /// Every kernel, in a fixed order (the index of [`Kernel::index`]).
    pub const ALL: [Kernel; 17] = [
        Kernel::BiasAct,
        Kernel::ActBackward,
        Kernel::RBiasAct,
        Kernel::RActBackward,
        Kernel::ColSum,
        Kernel::LossRows,
        Kernel::LossHvp,
        Kernel::CountCorrect,
        Kernel::Axpy,
        Kernel::Waxpy,
        Kernel::Scale,
        Kernel::DotPartial,
        Kernel::ReduceSum,
        Kernel::NonFinite,
        Kernel::SgdUpdate,
        Kernel::CommitStep,
        Kernel::GatherRows,
    ];

    /// Position in [`Kernel::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `extern "C"` name (the PTX entry).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::BiasAct => "bias_act",
            Kernel::ActBackward => "act_backward",
            Kernel::RBiasAct => "r_bias_act",
            Kernel::RActBackward => "r_act_backward",
            Kernel::ColSum => "col_sum",
            Kernel::LossRows => "loss_rows",
            Kernel::LossHvp => "loss_hvp",
            Kernel::CountCorrect => "count_correct",
            Kernel::Axpy => "axpy",
            Kernel::Waxpy => "waxpy",
            Kernel::Scale => "scale",
            Kernel::DotPartial => "dot_partial",
            Kernel::ReduceSum => "reduce_sum",
            Kernel::NonFinite => "nonfinite",
            Kernel::SgdUpdate => "sgd_update",
            Kernel::CommitStep => "commit_step",
            Kernel::GatherRows => "gather_rows",
        }
    }

    /// The file that defines it.
    pub fn module(self) -> Module {
        match self {
            Kernel::BiasAct
            | Kernel::ActBackward
            | Kernel::RBiasAct
            | Kernel::RActBackward
            | Kernel::ColSum => Module::Act,
            Kernel::LossRows | Kernel::LossHvp | Kernel::CountCorrect => Module::Loss,
            Kernel::Axpy
            | Kernel::Waxpy
            | Kernel::Scale
            | Kernel::DotPartial
            | Kernel::ReduceSum
            | Kernel::NonFinite => Module::Vecops,
            Kernel::SgdUpdate | Kernel::CommitStep => Module::Optim,
            Kernel::GatherRows => Module::Data,
        }
    }
}

/// The NVRTC virtual architecture for a device of compute capability
/// `major.minor`, e.g. `compute_90` for an H100/H200.
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("compute_{major}{minor}")
}

/// Whether the NVRTC shared library can be loaded (searched by cudarc as
/// `libnvrtc.so`, `libnvrtc.so.13`, … on the loader path).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries dlopen on cudarc's candidate names and closes it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles one module to PTX for `arch` (e.g. `compute_90`) with NVRTC.
/// Fails (never panics) when NVRTC is missing or the source does not
/// compile; the error then holds NVRTC's log.
pub fn compile(module: Module, arch: &str) -> Result<String, GpuError> {
    if !nvrtc_available() {
        return Err(GpuError::MissingLibrary("NVRTC (libnvrtc.so)".into()));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        // NVRTC's defaults otherwise: no fast math (full-precision expf,
        // logf, tanhf, divisions and square roots, no flush to zero), so the
        // elementwise maths matches the CPU's to within a few ulps.
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(module.file().into()),
        ..Default::default()
    };
    let ptx =
        cudarc::nvrtc::compile_ptx_with_opts(module.program(), opts).map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => GpuError::Compile(
                format!("{}: {nvrtc:?}\n{}", module.file(), log.to_string_lossy()),
            ),
            e => GpuError::Compile(format!("{}: {e}", module.file())),
        })?;
    Ok(ptx.to_src())
}

/// A kernel parameter's kind, as the CUDA signature declares it.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParamKind {
    /// Any pointer.
    Ptr,
    /// `float`.
    F32,
    /// `u32`.
    U32,
    /// `int`.
    I32,
    /// `u64`.
    U64,
}

/// The parameter kinds of `kernel`, parsed from its `.cu` source;
/// `None` when the source does not define it as expected.
#[cfg(test)]
pub(crate) fn signature(kernel: Kernel) -> Option<Vec<ParamKind>> {
    let src = kernel.module().source();
    let head = format!("extern \"C\" __global__ void {}(", kernel.name());
    let start = src.find(&head)? + head.len();
    let end = start + src[start..].find(')')?;
    let params = src[start..end].split(',').map(str::trim);
    let mut kinds = vec![];
    for p in params {
        let toks: Vec<&str> = p.split_whitespace().collect();
        let ty: String = toks[..toks.len().checked_sub(1)?].join(" ");
        let kind = if ty.ends_with('*') || toks.last()?.starts_with('*') {
            ParamKind::Ptr
        } else {
            match ty.as_str() {
                "float" | "const float" => ParamKind::F32,
                "u32" | "const u32" => ParamKind::U32,
                "int" | "const int" => ParamKind::I32,
                "u64" | "const u64" => ParamKind::U64,
                _ => return None,
            }
        };
        kinds.push(kind);
    }
    Some(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_once_in_its_module() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::ALL[k.index()], k);
            let head = format!("extern \"C\" __global__ void {}(", k.name());
            for m in Module::ALL {
                let n = m.source().matches(&head).count();
                assert_eq!(
                    n,
                    usize::from(m == k.module()),
                    "{} in {}",
                    k.name(),
                    m.file()
                );
            }
            assert!(signature(k).is_some(), "signature of {}", k.name());
        }
        // and no kernel in the sources that Rust does not know
        for m in Module::ALL {
            let defined = m.source().matches("__global__").count();
            assert_eq!(defined, m.kernels().count(), "{}", m.file());
        }
    }

    #[test]
    fn each_kernel_names_the_rust_it_mirrors() {
        // every kernel but the data-movement/bookkeeping ones documents
        // the fdgr-kernel function it mirrors, right above it
        for k in Kernel::ALL {
            let src = k.module().source();
            let at = src.find(&format!("void {}(", k.name())).expect("defined");
            let before = &src[..at];
            let comment_start = before.rfind("\n\n").unwrap_or(0);
            let comment = &before[comment_start..];
            let exempt = matches!(
                k,
                Kernel::CommitStep | Kernel::GatherRows | Kernel::ReduceSum
            );
            assert!(
                exempt || comment.contains("Mirrors "),
                "{} lacks a 'Mirrors …' comment",
                k.name()
            );
        }
    }

    #[test]
    fn signatures_parse() {
        use ParamKind::*;
        assert_eq!(
            signature(Kernel::SgdUpdate).unwrap(),
            vec![Ptr, Ptr, Ptr, U64, F32, F32, I32, F32, I32, Ptr]
        );
        assert_eq!(signature(Kernel::CommitStep).unwrap(), vec![Ptr, U32, U32]);
    }

    #[test]
    fn program_has_header_first() {
        let p = Module::Loss.program();
        assert!(p.starts_with("#line 1 \"common.cuh\""));
        assert!(p.contains("#line 1 \"loss.cu\""));
        assert_eq!(arch_for(9, 0), "compute_90");
    }
}
