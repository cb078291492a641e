//! A CPU stand-in for the device, for the unit tests. It holds no kernel
//! maths: every kernel launch runs the CUDA C of `gpu/kernels/` itself,
//! compiled for the CPU by `fdgr-cuda-cpu` (gpu/cpu-runtime), with the grid
//! and block the device path launches with. What the emulator adds is what
//! it is good at:
//!
//! * memory: typed allocations (f32 or u32), zeroed like `alloc_zeros`,
//!   each between two guard zones of canary words; a canary that changes
//!   during a launch (a write out of bounds) panics, naming the kernel, and
//!   a kernel that reads out of bounds reads NaN (f32) or a huge index;
//! * argument checks: count and type of every argument against the
//!   parameters the C++ compiler saw in the `.cu` declaration, pointer
//!   arguments against the element type of the allocation they point into,
//!   offsets inside their allocation;
//! * launch checks: the block and grid against the kernel's launch shape in
//!   the kernel table;
//! * SGEMM: the column-major mapping of [`crate::gemm`] on a reference
//!   BLAS (cuBLAS stands here), with the cuBLAS rule that C aliases no
//!   operand;
//! * counters (launches, multiply-adds, device reads) for the tests, and
//!   an injected fault ([`Fault`]) to show that the cross-checks catch a bug.
//!
//! Any failed check panics, failing the test.

use std::ffi::c_void;

use fdgr_cuda_cpu::{self as cpu, Param, Value};

use crate::device::{Arg, DPtr, Device, GemmOp};
use crate::error::GpuError;
use crate::gemm::{col_major, tests::blas_sgemm};
use crate::grid::{Launch, LaunchShape};
use crate::kernels::Kernel;

/// Guard words on each side of an allocation.
const GUARD: usize = 16;
/// The guard words' value: a NaN as an f32, an index far out of range as a
/// u32.
const CANARY: u32 = 0x7FBA_D00D;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F32,
    U32,
}

struct Alloc {
    elem: Elem,
    len: usize,
    /// GUARD canaries, `len` values (f32 as bits), GUARD canaries.
    words: Vec<u32>,
}

impl Alloc {
    fn new(elem: Elem, len: usize) -> Alloc {
        let mut words = vec![CANARY; len + 2 * GUARD];
        words[GUARD..GUARD + len].fill(0);
        Alloc { elem, len, words }
    }

    /// Index of the first guard word that is no longer a canary.
    fn broken_guard(&self) -> Option<isize> {
        let front = self.words[..GUARD].iter().position(|&w| w != CANARY);
        if let Some(i) = front {
            return Some(i as isize - GUARD as isize);
        }
        let back = &self.words[GUARD + self.len..];
        back.iter()
            .position(|&w| w != CANARY)
            .map(|i| (self.len + i) as isize)
    }
}

/// An allocation of the emulator.
pub(crate) struct EBuf {
    id: u64,
    len: usize,
}

/// A deliberate bug, to show that the tests catch one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Every `col_sum` launch gets β = 0: the bias gradients drop the
    /// `β·out` term (F-GR's (1 − γ/ε)·g), as a host that passed the wrong
    /// β would.
    ColSumBetaZero,
}

/// The emulated device.
#[derive(Default)]
pub(crate) struct Emu {
    mem: Vec<Alloc>,
    /// Kernels launched, in order.
    pub launches: Vec<Kernel>,
    /// Multiply-adds of all SGEMMs.
    pub gemm_macs: u64,
    /// Device → host reads (each one a wait for the device on CUDA).
    pub downloads: usize,
    /// What the CPU execution of the kernels did, summed over launches.
    pub cpu: cpu::Stats,
    /// An injected bug, if any.
    pub fault: Option<Fault>,
    /// When set, grid-stride (elementwise) kernels run with at most this
    /// many blocks, so their loops take more than one turn at test sizes.
    pub shrink_grid: Option<u32>,
}

/// The compiled kernel of `k` (the CPU build lists the table's kernels in
/// table order).
fn compiled(k: Kernel) -> &'static cpu::CpuKernel {
    let c = &cpu::kernels()[k.index()];
    assert_eq!(c.name(), k.name(), "CPU build and kernel table disagree");
    c
}

impl Emu {
    pub(crate) fn new() -> Emu {
        Emu::default()
    }

    /// An emulator with a deliberate bug.
    pub(crate) fn with_fault(f: Fault) -> Emu {
        Emu {
            fault: Some(f),
            ..Emu::default()
        }
    }

    fn slot(&self, p: DPtr, n: usize, elem: Elem, what: &str) -> std::ops::Range<usize> {
        let a = self
            .mem
            .get(p.base as usize)
            .unwrap_or_else(|| panic!("{what}: no allocation {}", p.base));
        assert_eq!(
            a.elem, elem,
            "{what}: {elem:?} access to a {:?} buffer",
            a.elem
        );
        assert!(
            p.off + n <= a.len,
            "{what} out of bounds: {p:?} + {n} > {}",
            a.len
        );
        GUARD + p.off..GUARD + p.off + n
    }

    fn f(&self, p: DPtr, n: usize) -> Vec<f32> {
        let r = self.slot(p, n, Elem::F32, "f32 read");
        self.mem[p.base as usize].words[r]
            .iter()
            .map(|&w| f32::from_bits(w))
            .collect()
    }

    fn wf(&mut self, p: DPtr, data: &[f32]) {
        let r = self.slot(p, data.len(), Elem::F32, "f32 write");
        for (w, v) in self.mem[p.base as usize].words[r].iter_mut().zip(data) {
            *w = v.to_bits();
        }
    }

    fn u(&self, p: DPtr, n: usize) -> Vec<u32> {
        let r = self.slot(p, n, Elem::U32, "u32 read");
        self.mem[p.base as usize].words[r].to_vec()
    }

    fn wu(&mut self, p: DPtr, data: &[u32]) {
        let r = self.slot(p, data.len(), Elem::U32, "u32 write");
        self.mem[p.base as usize].words[r].copy_from_slice(data);
    }

    /// A new f32 buffer holding `v`.
    pub(crate) fn put(&mut self, v: &[f32]) -> DPtr {
        let b = self.push(Elem::F32, v.len());
        let p = self.ptr(&b);
        self.wf(p, v);
        p
    }

    /// A new u32 buffer holding `v`.
    pub(crate) fn put_u32(&mut self, v: &[u32]) -> DPtr {
        let b = self.push(Elem::U32, v.len());
        let p = self.iptr(&b);
        self.wu(p, v);
        p
    }

    /// `n` f32 at `p`.
    pub(crate) fn get(&self, p: DPtr, n: usize) -> Vec<f32> {
        self.f(p, n)
    }

    /// `n` u32 at `p`.
    pub(crate) fn get_u32(&self, p: DPtr, n: usize) -> Vec<u32> {
        self.u(p, n)
    }

    fn push(&mut self, elem: Elem, n: usize) -> EBuf {
        self.mem.push(Alloc::new(elem, n));
        EBuf {
            id: self.mem.len() as u64 - 1,
            len: n,
        }
    }

    /// The launch configuration against the kernel's shape in the table.
    fn check_config(kernel: Kernel, cfg: &Launch) {
        let shape = kernel.shape();
        assert_eq!(
            cfg.block,
            shape.block(),
            "{}: block of a {shape:?} kernel",
            kernel.name()
        );
        assert!(
            cfg.grid.0 >= 1 && cfg.grid.0 <= shape.max_grid() && (cfg.grid.1, cfg.grid.2) == (1, 1),
            "{}: grid {:?} of a {shape:?} kernel",
            kernel.name(),
            cfg.grid
        );
    }

    /// The kernel's argument values: every argument checked against the
    /// compiled parameter, pointers turned into host addresses inside their
    /// allocation.
    fn values(&mut self, kernel: Kernel, params: &[Param], args: &[Arg]) -> Vec<Value> {
        let name = kernel.name();
        assert_eq!(
            params.len(),
            args.len(),
            "{name}: {} arguments for {} parameters",
            args.len(),
            params.len()
        );
        let bases: Vec<(Elem, usize, *mut u32)> = self
            .mem
            .iter_mut()
            .map(|a| (a.elem, a.len, a.words.as_mut_ptr()))
            .collect();
        let mut v = Vec::with_capacity(args.len());
        for (i, (p, a)) in params.iter().zip(args).enumerate() {
            let value = match (*p, *a) {
                (Param::PtrF32 { .. } | Param::PtrU32 { .. }, Arg::Ptr(d)) => {
                    let &(elem, len, base) = bases
                        .get(d.base as usize)
                        .unwrap_or_else(|| panic!("{name} arg {i}: no allocation {}", d.base));
                    let want = if matches!(p, Param::PtrF32 { .. }) {
                        Elem::F32
                    } else {
                        Elem::U32
                    };
                    assert_eq!(elem, want, "{name} arg {i}: {p:?} given a {elem:?} buffer");
                    assert!(
                        d.off <= len,
                        "{name} arg {i}: offset {} past the end of {len}",
                        d.off
                    );
                    // SAFETY: GUARD + off <= GUARD + len is inside `words`.
                    Value::Ptr(unsafe { base.add(GUARD + d.off) } as *mut c_void)
                }
                (Param::PtrF32 { .. } | Param::PtrU32 { .. }, Arg::Null) => {
                    Value::Ptr(std::ptr::null_mut())
                }
                (Param::F32, Arg::F32(x)) => Value::F32(x),
                (Param::U32, Arg::U32(x)) => Value::U32(x),
                (Param::I32, Arg::I32(x)) => Value::I32(x),
                (Param::U64, Arg::U64(x)) => Value::U64(x),
                (p, a) => panic!("{name} arg {i}: {p:?} expected, got {a:?}"),
            };
            v.push(value);
        }
        v
    }

    fn check_guards(&self, kernel: Kernel) {
        for (id, a) in self.mem.iter().enumerate() {
            if let Some(at) = a.broken_guard() {
                panic!(
                    "{}: wrote out of bounds of allocation {id} ({:?} × {}) at element {at}",
                    kernel.name(),
                    a.elem,
                    a.len
                );
            }
        }
    }
}

impl Device for Emu {
    type Buf = EBuf;
    type IBuf = EBuf;

    fn alloc(&mut self, n: usize) -> Result<EBuf, GpuError> {
        Ok(self.push(Elem::F32, n))
    }

    fn alloc_u32(&mut self, n: usize) -> Result<EBuf, GpuError> {
        Ok(self.push(Elem::U32, n))
    }

    fn len(&self, b: &EBuf) -> usize {
        b.len
    }

    fn ptr(&self, b: &EBuf) -> DPtr {
        assert_eq!(self.mem[b.id as usize].elem, Elem::F32);
        DPtr { base: b.id, off: 0 }
    }

    fn iptr(&self, b: &EBuf) -> DPtr {
        assert_eq!(self.mem[b.id as usize].elem, Elem::U32);
        DPtr { base: b.id, off: 0 }
    }

    fn upload(&mut self, dst: DPtr, src: &[f32]) -> Result<(), GpuError> {
        self.wf(dst, src);
        Ok(())
    }

    fn upload_u32(&mut self, dst: DPtr, src: &[u32]) -> Result<(), GpuError> {
        self.wu(dst, src);
        Ok(())
    }

    fn stage_u32(&mut self, dst: DPtr, src: &[u32]) -> Result<(), GpuError> {
        self.wu(dst, src);
        Ok(())
    }

    fn download(&mut self, src: DPtr, dst: &mut [f32]) -> Result<(), GpuError> {
        self.downloads += 1;
        dst.copy_from_slice(&self.f(src, dst.len()));
        Ok(())
    }

    fn download_u32(&mut self, src: DPtr, dst: &mut [u32]) -> Result<(), GpuError> {
        self.downloads += 1;
        dst.copy_from_slice(&self.u(src, dst.len()));
        Ok(())
    }

    fn copy(&mut self, dst: DPtr, src: DPtr, n: usize) -> Result<(), GpuError> {
        let v = self.f(src, n);
        self.wf(dst, &v);
        Ok(())
    }

    fn fill_u32(&mut self, dst: DPtr, value: u32, n: usize) -> Result<(), GpuError> {
        // cuMemsetD32 writes bits, whatever the buffer holds
        let elem = self.mem[dst.base as usize].elem;
        let r = self.slot(dst, n, elem, "fill");
        self.mem[dst.base as usize].words[r].fill(value);
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), GpuError> {
        Ok(())
    }

    fn gemm(&mut self, g: &GemmOp) -> Result<(), GpuError> {
        let (la, lb, lc) = (g.m * g.k, g.k * g.n, g.m * g.n);
        // cuBLAS does not allow C to alias A or B
        for (p, l) in [(g.a, la), (g.b, lb)] {
            let disjoint = p.base != g.c.base || p.off + l <= g.c.off || g.c.off + lc <= p.off;
            assert!(disjoint, "SGEMM output aliases an input");
        }
        let a = self.f(g.a, la);
        let b = self.f(g.b, lb);
        let mut c = self.f(g.c, lc);
        let cm = col_major(g.ta, g.tb, g.m, g.n, g.k);
        blas_sgemm(
            cm.transa, cm.transb, cm.m, cm.n, cm.k, g.alpha, &b, cm.lda, &a, cm.ldb, g.beta,
            &mut c, cm.ldc,
        );
        self.wf(g.c, &c);
        self.gemm_macs += (g.m * g.n * g.k) as u64;
        Ok(())
    }

    fn launch(&mut self, kernel: Kernel, cfg: Launch, args: &[Arg]) -> Result<(), GpuError> {
        Emu::check_config(kernel, &cfg);
        let mut cfg = cfg;
        if let (Some(g), LaunchShape::Elementwise) = (self.shrink_grid, kernel.shape()) {
            cfg.grid.0 = cfg.grid.0.min(g.max(1));
        }
        let c = compiled(kernel);
        let mut args = args.to_vec();
        if self.fault == Some(Fault::ColSumBetaZero) && kernel == Kernel::ColSum {
            args[5] = Arg::F32(0.0);
        }
        let values = self.values(kernel, c.params(), &args);
        let (g, b) = (cfg.grid, cfg.block);
        // SAFETY: every pointer points into a live allocation of the type
        // the parameter declares (checked by `values`); accesses past its
        // end land in the guard words (checked below) as long as they stay
        // within GUARD elements, as the kernels' bounds make them.
        let st = unsafe { c.launch([g.0, g.1, g.2], [b.0, b.1, b.2], &values) }
            .unwrap_or_else(|e| panic!("{e}"));
        self.check_guards(kernel);
        self.launches.push(kernel);
        self.cpu.blocks += st.blocks;
        self.cpu.threads += st.threads;
        self.cpu.barriers += st.barriers;
        self.cpu.fibers += st.fibers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launchers;

    /// The CPU build holds exactly the table's kernels, in its order, each
    /// from its file.
    #[test]
    fn cpu_build_matches_the_table() {
        let built: Vec<(&str, &str)> = cpu::kernels()
            .iter()
            .map(|k| (k.name(), k.file()))
            .collect();
        let table: Vec<(&str, &str)> = Kernel::ALL
            .iter()
            .map(|k| (k.name(), k.module().file()))
            .collect();
        assert_eq!(built, table);
    }

    /// Wrong arguments and configurations are caught before the kernel runs.
    #[test]
    fn launch_checks() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let mut e = Emu::new();
        let x = e.alloc(10).unwrap();
        let iy = e.alloc_u32(10).unwrap();
        let (xp, ip) = (e.ptr(&x), e.iptr(&iy));
        let cfg = Launch::elementwise(10).unwrap();
        let mut fails = |k: Kernel, cfg: Launch, args: Vec<Arg>, what: &str| {
            let r = catch_unwind(AssertUnwindSafe(|| e.launch(k, cfg, &args)));
            let msg = match r {
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
                Ok(_) => panic!("{what}: not caught"),
            };
            assert!(msg.contains(what), "{msg}");
        };
        let scale = |p: DPtr| vec![Arg::Ptr(p), Arg::F32(2.0), Arg::U64(10)];
        fails(Kernel::Scale, cfg, scale(ip), "given a U32 buffer");
        fails(Kernel::Scale, cfg, scale(xp.at(11)), "past the end");
        fails(
            Kernel::Scale,
            cfg,
            vec![Arg::Ptr(xp), Arg::F32(2.0), Arg::U32(10)],
            "U64 expected",
        );
        fails(
            Kernel::Scale,
            cfg,
            scale(xp)[..2].to_vec(),
            "2 arguments for 3",
        );
        fails(
            Kernel::Scale,
            Launch::single(),
            scale(xp),
            "block of a Elementwise",
        );
        let two_blocks = Launch {
            grid: (2, 1, 1),
            block: (256, 1, 1),
        };
        fails(
            Kernel::ReduceSum,
            two_blocks,
            vec![],
            "grid (2, 1, 1) of a OneBlock",
        );
        // a kernel writing past the end of its buffer: scale over 12 of 10
        fails(
            Kernel::Scale,
            cfg,
            vec![Arg::Ptr(xp), Arg::F32(2.0), Arg::U64(12)],
            "scale: wrote out of bounds of allocation 0 (F32 × 10) at element 10",
        );
        // and the same launch in bounds runs the CUDA C
        let mut e = Emu::new();
        let x = e.alloc(10).unwrap();
        let xp = e.ptr(&x);
        e.upload(xp, &[1.5; 10]).unwrap();
        launchers::scale(&mut e, xp, 2.0, 10).unwrap();
        assert_eq!(e.f(xp, 10), [3.0; 10]);
        assert_eq!(e.launches, [Kernel::Scale]);
        assert_eq!(e.cpu.threads, 256);
    }
}
