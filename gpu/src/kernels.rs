//! The CUDA C sources in `gpu/kernels/`, the kernels they define, and
//! their compilation to PTX with NVRTC at run time.
//!
//! Each `.cu` file is one NVRTC program: the codes shared with the kernel's
//! enums (`codes.cuh`, written from them by gpu/kernels/codes.rs), [`COMMON`]
//! (common.cuh), then the file. Kernels are `extern "C"` so their PTX entry names are their
//! C names.

use crate::error::GpuError;
use crate::grid::{Launch, LaunchShape};

/// `gpu/kernels/common.cuh`: activations, codes, reductions, prepended to
/// every file.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// Expands the kernel table (`gpu/kernels/table.rs`) into [`Module`] and
/// [`Kernel`] (gpu/cpu-runtime/build.rs reads the same table with its own
/// macro).
macro_rules! kernel_table {
    ($( $file:literal as $module:ident : $doc:literal {
        $( $kernel:ident = $cname:ident : $shape:ident ),* $(,)?
    } )*) => {
        /// One `.cu` file of `gpu/kernels/`, compiled as one module.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Module {
            $(
                #[doc = concat!("`", $file, "`: ", $doc, ".")]
                $module,
            )*
        }

        impl Module {
            /// Every module, in table order.
            pub const ALL: &'static [Module] = &[$(Module::$module),*];

            /// File name in `gpu/kernels/`.
            pub fn file(self) -> &'static str {
                match self {
                    $(Module::$module => $file,)*
                }
            }

            /// The file's text.
            pub fn source(self) -> &'static str {
                match self {
                    $(Module::$module => include_str!(concat!("../kernels/", $file)),)*
                }
            }
        }

        /// A kernel of `gpu/kernels/`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($(
                #[doc = concat!("`", stringify!($cname), "` (", $file, ")")]
                $kernel,
            )*)*
        }

        impl Kernel {
            /// Every kernel, in table order (the index of [`Kernel::index`]).
            pub const ALL: &'static [Kernel] = &[$($(Kernel::$kernel,)*)*];

            /// The `extern "C"` name (the PTX entry).
            pub fn name(self) -> &'static str {
                match self {
                    $($(Kernel::$kernel => stringify!($cname),)*)*
                }
            }

            /// The file that defines it.
            pub fn module(self) -> Module {
                match self {
                    $($(Kernel::$kernel => Module::$module,)*)*
                }
            }

            /// The shape of its launches (its grid and block for a size).
            pub fn shape(self) -> LaunchShape {
                match self {
                    $($(Kernel::$kernel => LaunchShape::$shape,)*)*
                }
            }
        }
    };
}

include!("../kernels/table.rs");
include!("../kernels/codes.rs");

impl Module {
    /// The NVRTC program: codes.cuh, common.cuh, then the file (with
    /// `#line` directives so compiler messages name the right file and
    /// line).
    pub fn program(self) -> String {
        format!(
            "#line 1 \"codes.cuh\"\n{}#line 1 \"common.cuh\"\n{}\n#line 1 \"{}\"\n{}",
            codes_cuh(),
            COMMON,
            self.file(),
            self.source()
        )
    }

    /// The kernels this module defines.
    pub fn kernels(self) -> impl Iterator<Item = Kernel> {
        Kernel::ALL
            .iter()
            .copied()
            .filter(move |k| k.module() == self)
    }
}

impl Kernel {
    /// Position in [`Kernel::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The launch configuration for `size` (the meaning of `size` is the
    /// shape's, see [`LaunchShape::config`]); `None` when there is nothing
    /// to launch.
    pub fn config(self, size: u64) -> Option<Launch> {
        self.shape().config(size)
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
        // No contraction of a*b + c into fused multiply-adds (NVRTC's
        // default is --fmad=true): the CPU kernel rounds every product, and
        // the tests run these sources on the CPU with -ffp-contract=off, so
        // this keeps the device arithmetic the one the tests check. NVRTC's
        // defaults otherwise: no fast math (full-precision expf, logf, tanhf,
        // divisions and square roots, no flush to zero).
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            "--fmad=false".into(),
        ],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_is_defined_once_in_its_module() {
        for &k in Kernel::ALL {
            assert_eq!(Kernel::ALL[k.index()], k);
            let head = format!("extern \"C\" __global__ void {}(", k.name());
            for &m in Module::ALL {
                let n = m.source().matches(&head).count();
                assert_eq!(
                    n,
                    usize::from(m == k.module()),
                    "{} in {}",
                    k.name(),
                    m.file()
                );
            }
        }
        // and no kernel in the sources that Rust does not know
        for &m in Module::ALL {
            let defined = m.source().matches("__global__").count();
            assert_eq!(defined, m.kernels().count(), "{}", m.file());
        }
    }

    #[test]
    fn each_kernel_names_the_rust_it_mirrors() {
        // every kernel but the data-movement/bookkeeping ones documents
        // the fdgr-kernel function it mirrors, right above it
        for &k in Kernel::ALL {
            let src = k.module().source();
            let at = src.find(&format!("void {}(", k.name())).expect("defined");
            let before = &src[..at];
            let comment_start = before.rfind("\n\n").unwrap_or(0);
            let comment = &before[comment_start..];
            let exempt = matches!(
                k,
                Kernel::CommitStep
                    | Kernel::GatherRows
                    | Kernel::GatherCrop
                    | Kernel::ReduceSum
                    | Kernel::CopyUnless
                    | Kernel::ToCnp
                    | Kernel::FromCnp
            );
            assert!(
                exempt || comment.contains("Mirrors "),
                "{} lacks a 'Mirrors …' comment",
                k.name()
            );
        }
    }

    #[test]
    fn program_has_header_first() {
        let p = Module::Loss.program();
        assert!(p.starts_with("#line 1 \"codes.cuh\""));
        assert!(p.contains("#define RULE_SGD 0\n#define RULE_ADAM 1\n#define RULE_ADAMW 2\n"));
        assert!(p.contains("#line 1 \"common.cuh\""));
        assert!(p.contains("#line 1 \"loss.cu\""));
        assert_eq!(arch_for(9, 0), "compute_90");
    }
}
