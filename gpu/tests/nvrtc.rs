//! Every CUDA kernel of `gpu/kernels/` compiles to PTX with NVRTC for
//! `compute_90` (H100 / H200), through cudarc's NVRTC API, the path the
//! backend takes at run time. No GPU needed: only the NVRTC library.
//!
//! NVRTC comes from the PyPI wheel `nvidia-cuda-nvrtc==13.0.*` that
//! `cargo xtask nvrtc` (and `cargo xtask test`) installs under
//! `target/nvrtc/`; the xtask passes its directory in `FDGR_NVRTC_LIB_DIR`
//! (and `LD_LIBRARY_PATH`). Without that variable the test fails when `CI`
//! is set and is skipped, loudly, otherwise. `FDGR_PTX_OUT`, if set, is a
//! directory where the PTX is written (the xtask runs ptxas on it).

use std::path::PathBuf;

use fdgr_gpu::kernels::{compile, nvrtc_available, Module};

const ARCH: &str = "compute_90";

/// Loads the wheel's NVRTC libraries by path (builtins first) so that
/// cudarc's dlopen by name (`libnvrtc.so.13`) finds the loaded copy even
/// without `LD_LIBRARY_PATH`.
fn preload(dir: &PathBuf) -> Vec<libloading::Library> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("FDGR_NVRTC_LIB_DIR={}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("libnvrtc") && n.contains(".so") && !n.contains(".alt.")
        })
        .collect();
    // builtins before the compiler that dlopens them
    names.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
    names
        .iter()
        // SAFETY: NVIDIA's NVRTC libraries; their initialisers have no
        // preconditions.
        .map(|p| {
            unsafe { libloading::Library::new(p) }
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

#[test]
fn nvrtc_compiles_every_kernel() {
    let Some(dir) = std::env::var_os("FDGR_NVRTC_LIB_DIR").map(PathBuf::from) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "FDGR_NVRTC_LIB_DIR is not set: in CI the CUDA kernels must be compiled \
                 (run `cargo xtask nvrtc`, which installs nvidia-cuda-nvrtc==13.0.* and sets it)"
            );
        }
        // straight to fd 2: the test harness captures eprintln!
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"\n**********************************************************************\n\
              SKIPPED nvrtc_compiles_every_kernel: FDGR_NVRTC_LIB_DIR is not set.\n\
              The CUDA kernels were NOT compiled. Run `cargo xtask nvrtc`.\n\
              **********************************************************************\n",
        );
        return;
    };
    let _libs = preload(&dir);
    assert!(
        nvrtc_available(),
        "NVRTC not loadable from {} (cudarc looks for libnvrtc.so / libnvrtc.so.13)",
        dir.display()
    );
    let out = std::env::var_os("FDGR_PTX_OUT").map(PathBuf::from);
    if let Some(o) = &out {
        std::fs::create_dir_all(o).expect("FDGR_PTX_OUT");
    }
    for &m in Module::ALL {
        let ptx = compile(m, ARCH).unwrap_or_else(|e| panic!("{e}"));
        assert!(ptx.contains(".version "), "{}: no PTX header", m.file());
        assert!(ptx.contains(".target sm_90"), "{}: wrong target", m.file());
        let mut n = 0;
        for k in m.kernels() {
            assert!(
                ptx.contains(&format!(".entry {}(", k.name())),
                "{}: no entry for kernel {}",
                m.file(),
                k.name()
            );
            n += 1;
        }
        assert_eq!(
            ptx.matches(".entry ").count(),
            n,
            "{}: unexpected entries",
            m.file()
        );
        // --fmad=false: no a*b + c contracted into an FMA, as on the CPU
        // (the tests run these files compiled with -ffp-contract=off). The
        // files without expf/logf/tanhf (whose libdevice code uses fma on
        // purpose) must have none; the others round every product.
        if !m.source().contains("expf") && !m.source().contains("act_f(") {
            assert!(
                !ptx.contains("fma."),
                "{}: contracted FMA in the PTX",
                m.file()
            );
        }
        assert!(
            !ptx.contains("mul.f32"),
            "{}: contractible product",
            m.file()
        );
        println!(
            "nvrtc {ARCH}: {:<10} {n} kernels, {} bytes of PTX",
            m.file(),
            ptx.len()
        );
        if let Some(o) = &out {
            let p = o.join(m.file().replace(".cu", ".ptx"));
            std::fs::write(&p, &ptx).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

/// A source that does not compile is an error carrying NVRTC's log, not a
/// panic (checked only where NVRTC is available).
#[test]
fn nvrtc_reports_errors() {
    let Some(dir) = std::env::var_os("FDGR_NVRTC_LIB_DIR").map(PathBuf::from) else {
        return; // the test above reports the skip
    };
    let _libs = preload(&dir);
    let r = cudarc::nvrtc::compile_ptx(
        "extern \"C\" __global__ void k(float* x) { x[0] = undefined_thing; }",
    );
    let e = r.expect_err("must not compile");
    assert!(format!("{e:?}").contains("undefined_thing"), "{e:?}");
}
