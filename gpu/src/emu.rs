//! A CPU emulator of the device, for the unit tests: memory is a list of
//! typed allocations, SGEMM goes through the column-major mapping and a
//! reference BLAS, and every kernel launch (after checking its arguments
//! against the kernel's CUDA signature parsed from the `.cu` source, and
//! its launch configuration) runs a Rust transcription of the CUDA C.
//! Out-of-bounds accesses and aliased SGEMM operands panic, failing the
//! test.

use crate::device::{Arg, DPtr, Device, GemmOp};
use crate::error::GpuError;
use crate::gemm::{col_major, tests::blas_sgemm};
use crate::kernels::{signature, Kernel, ParamKind};
use crate::launch::{Launch, COLSUM_COLS, COLSUM_ROWS, REDUCE_THREADS};
use fdgr_kernel::Act;

pub(crate) enum Mem {
    F(Vec<f32>),
    U(Vec<u32>),
}

/// An allocation of the emulator.
pub(crate) struct EBuf {
    id: u64,
    len: usize,
}

/// The emulated device.
#[derive(Default)]
pub(crate) struct Emu {
    pub(crate) mem: Vec<Mem>,
    /// Kernels launched, in order.
    pub launches: Vec<Kernel>,
    /// Multiply-adds of all SGEMMs.
    pub gemm_macs: u64,
    /// Device → host reads (each one a wait for the device on CUDA).
    pub downloads: usize,
    /// Injected bug: col_sum ignores β (for testing the cross-check).
    pub fault_colsum_beta: bool,
}

fn act_of(code: i32) -> Act {
    match code {
        0 => Act::Identity,
        1 => Act::Relu,
        2 => Act::Tanh,
        3 => Act::Sigmoid,
        c => panic!("bad activation code {c}"),
    }
}

struct A<'a>(&'a [Arg]);

impl A<'_> {
    fn p(&self, i: usize) -> DPtr {
        match self.0[i] {
            Arg::Ptr(p) => p,
            ref a => panic!("arg {i}: pointer expected, got {a:?}"),
        }
    }
    fn opt(&self, i: usize) -> Option<DPtr> {
        match self.0[i] {
            Arg::Ptr(p) => Some(p),
            Arg::Null => None,
            ref a => panic!("arg {i}: pointer expected, got {a:?}"),
        }
    }
    fn f(&self, i: usize) -> f32 {
        match self.0[i] {
            Arg::F32(v) => v,
            ref a => panic!("arg {i}: f32 expected, got {a:?}"),
        }
    }
    fn u(&self, i: usize) -> usize {
        match self.0[i] {
            Arg::U32(v) => v as usize,
            ref a => panic!("arg {i}: u32 expected, got {a:?}"),
        }
    }
    fn q(&self, i: usize) -> usize {
        match self.0[i] {
            Arg::U64(v) => v as usize,
            ref a => panic!("arg {i}: u64 expected, got {a:?}"),
        }
    }
    fn i(&self, i: usize) -> i32 {
        match self.0[i] {
            Arg::I32(v) => v,
            ref a => panic!("arg {i}: int expected, got {a:?}"),
        }
    }
}

impl Emu {
    pub(crate) fn new() -> Emu {
        Emu::default()
    }

    fn f(&self, p: DPtr, n: usize) -> Vec<f32> {
        match &self.mem[p.base as usize] {
            Mem::F(v) => {
                assert!(
                    p.off + n <= v.len(),
                    "read out of bounds: {p:?} + {n} > {}",
                    v.len()
                );
                v[p.off..p.off + n].to_vec()
            }
            Mem::U(_) => panic!("f32 read of a u32 buffer"),
        }
    }

    fn wf(&mut self, p: DPtr, data: &[f32]) {
        match &mut self.mem[p.base as usize] {
            Mem::F(v) => {
                assert!(p.off + data.len() <= v.len(), "write out of bounds: {p:?}");
                v[p.off..p.off + data.len()].copy_from_slice(data);
            }
            Mem::U(_) => panic!("f32 write to a u32 buffer"),
        }
    }

    fn u(&self, p: DPtr, n: usize) -> Vec<u32> {
        match &self.mem[p.base as usize] {
            Mem::U(v) => {
                assert!(p.off + n <= v.len(), "read out of bounds: {p:?} + {n}");
                v[p.off..p.off + n].to_vec()
            }
            Mem::F(_) => panic!("u32 read of an f32 buffer"),
        }
    }

    fn wu(&mut self, p: DPtr, data: &[u32]) {
        match &mut self.mem[p.base as usize] {
            Mem::U(v) => {
                assert!(p.off + data.len() <= v.len(), "write out of bounds: {p:?}");
                v[p.off..p.off + data.len()].copy_from_slice(data);
            }
            Mem::F(_) => panic!("u32 write to an f32 buffer"),
        }
    }

    fn check_args(kernel: Kernel, cfg: &Launch, args: &[Arg]) {
        let sig = signature(kernel).expect("kernel signature");
        assert_eq!(sig.len(), args.len(), "{}: argument count", kernel.name());
        for (i, (k, a)) in sig.iter().zip(args).enumerate() {
            let ok = matches!(
                (k, a),
                (ParamKind::Ptr, Arg::Ptr(_) | Arg::Null)
                    | (ParamKind::F32, Arg::F32(_))
                    | (ParamKind::U32, Arg::U32(_))
                    | (ParamKind::I32, Arg::I32(_))
                    | (ParamKind::U64, Arg::U64(_))
            );
            assert!(ok, "{} arg {i}: {k:?} expected, got {a:?}", kernel.name());
        }
        assert!(
            cfg.grid.0 >= 1 && cfg.block.0 >= 1,
            "{}: empty launch",
            kernel.name()
        );
        assert!(
            cfg.block.0 * cfg.block.1 * cfg.block.2 <= 1024,
            "block too large"
        );
        let a = A(args);
        match kernel {
            Kernel::ReduceSum | Kernel::DotPartial => {
                assert_eq!(cfg.block, (REDUCE_THREADS, 1, 1), "{}", kernel.name())
            }
            Kernel::ColSum => {
                assert_eq!(cfg.block, (COLSUM_COLS, COLSUM_ROWS, 1));
                assert!(
                    cfg.grid.0 as usize * COLSUM_COLS as usize >= a.u(3),
                    "col_sum grid"
                );
            }
            Kernel::LossRows | Kernel::CountCorrect => {
                assert!(
                    cfg.threads() as usize >= a.u(3),
                    "{}: rows not covered",
                    kernel.name()
                )
            }
            Kernel::LossHvp => assert!(cfg.threads() as usize >= a.u(2), "loss_hvp rows"),
            _ => {}
        }
    }
}

impl Device for Emu {
    type Buf = EBuf;
    type IBuf = EBuf;

    fn alloc(&mut self, n: usize) -> Result<EBuf, GpuError> {
        self.mem.push(Mem::F(vec![0.0; n]));
        Ok(EBuf {
            id: self.mem.len() as u64 - 1,
            len: n,
        })
    }

    fn alloc_u32(&mut self, n: usize) -> Result<EBuf, GpuError> {
        self.mem.push(Mem::U(vec![0; n]));
        Ok(EBuf {
            id: self.mem.len() as u64 - 1,
            len: n,
        })
    }

    fn len(&self, b: &EBuf) -> usize {
        b.len
    }

    fn ptr(&self, b: &EBuf) -> DPtr {
        assert!(matches!(self.mem[b.id as usize], Mem::F(_)));
        DPtr { base: b.id, off: 0 }
    }

    fn iptr(&self, b: &EBuf) -> DPtr {
        assert!(matches!(self.mem[b.id as usize], Mem::U(_)));
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
        match &self.mem[dst.base as usize] {
            Mem::F(_) => self.wf(dst, &vec![f32::from_bits(value); n]),
            Mem::U(_) => self.wu(dst, &vec![value; n]),
        }
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
        Emu::check_args(kernel, &cfg, args);
        self.launches.push(kernel);
        let a = A(args);
        match kernel {
            Kernel::BiasAct => {
                let (rows, cols, act) = (a.q(2), a.u(3), act_of(a.i(4)));
                let n = rows * cols;
                let mut z = self.f(a.p(0), n);
                let bias = self.f(a.p(1), cols);
                for (i, zi) in z.iter_mut().enumerate() {
                    *zi = act.f(*zi + bias[i % cols]);
                }
                self.wf(a.p(0), &z);
            }
            Kernel::ActBackward => {
                let (n, act) = (a.q(2), act_of(a.i(3)));
                let mut d = self.f(a.p(0), n);
                let av = self.f(a.p(1), n);
                for (di, ai) in d.iter_mut().zip(&av) {
                    *di *= act.df(*ai);
                }
                self.wf(a.p(0), &d);
            }
            Kernel::RBiasAct => {
                let (rows, cols, act) = (a.q(4), a.u(5), act_of(a.i(6)));
                let n = rows * cols;
                let mut rz = self.f(a.p(0), n);
                let vb = self.f(a.p(2), cols);
                let av = self.f(a.p(3), n);
                let mut ra = vec![0.0; n];
                for i in 0..n {
                    let z = rz[i] + vb[i % cols];
                    rz[i] = z;
                    ra[i] = act.df(av[i]) * z;
                }
                self.wf(a.p(0), &rz);
                self.wf(a.p(1), &ra);
            }
            Kernel::RActBackward => {
                let (n, act) = (a.q(4), act_of(a.i(5)));
                let mut rd = self.f(a.p(0), n);
                let rz = self.f(a.p(1), n);
                let av = self.f(a.p(2), n);
                let dz = self.f(a.p(3), n);
                for i in 0..n {
                    rd[i] = if act == Act::Relu {
                        rd[i] * act.df(av[i])
                    } else {
                        act.kappa(av[i]) * rz[i] * dz[i] + act.df(av[i]) * rd[i]
                    };
                }
                self.wf(a.p(0), &rd);
            }
            Kernel::ColSum => {
                let (rows, cols, alpha, mut beta) = (a.u(2), a.u(3), a.f(4), a.f(5));
                if self.fault_colsum_beta {
                    beta = 0.0;
                }
                let mut out = self.f(a.p(0), cols);
                let m = self.f(a.p(1), rows * cols);
                for (c, o) in out.iter_mut().enumerate() {
                    let t: f32 = (0..rows).map(|r| m[r * cols + c]).sum();
                    *o = (if beta == 0.0 { 0.0 } else { beta * *o }) + alpha * t;
                }
                self.wf(a.p(0), &out);
            }
            Kernel::LossRows => {
                let (loss, rows, k) = (a.i(0), a.u(3), a.u(4));
                let out = self.f(a.p(1), rows * k);
                let labels = self.u(a.p(2), rows);
                let mut delta = vec![0.0f32; rows * k];
                let mut row_loss = vec![0.0f32; rows];
                for r in 0..rows {
                    let z = &out[r * k..(r + 1) * k];
                    let y = labels[r] as usize;
                    let d = &mut delta[r * k..(r + 1) * k];
                    if loss == 0 {
                        let inv_b = 1.0f32 / rows as f32;
                        let mut m = z[0];
                        for &v in &z[1..] {
                            if v > m {
                                m = v;
                            }
                        }
                        let s: f32 = z.iter().map(|&v| (v - m).exp()).sum();
                        let lse = m + s.ln();
                        row_loss[r] = lse - z[y];
                        for j in 0..k {
                            let p = (z[j] - lse).exp();
                            d[j] = (p - if j == y { 1.0 } else { 0.0 }) * inv_b;
                        }
                    } else {
                        let two_inv_n = 2.0 * (1.0f32 / (rows * k) as f32);
                        let mut total = 0.0f32;
                        for j in 0..k {
                            let e = z[j] - if j == y { 1.0 } else { 0.0 };
                            total += e * e;
                            d[j] = two_inv_n * e;
                        }
                        row_loss[r] = total;
                    }
                }
                if let Some(dp) = a.opt(5) {
                    self.wf(dp, &delta);
                }
                self.wf(a.p(6), &row_loss);
            }
            Kernel::LossHvp => {
                let (loss, rows, k) = (a.i(0), a.u(2), a.u(3));
                let out = self.f(a.p(1), rows * k);
                let rv = self.f(a.p(4), rows * k);
                let mut h = vec![0.0f32; rows * k];
                for r in 0..rows {
                    let (z, rr) = (&out[r * k..(r + 1) * k], &rv[r * k..(r + 1) * k]);
                    if loss == 0 {
                        let inv_b = 1.0f32 / rows as f32;
                        let m = z
                            .iter()
                            .copied()
                            .fold(z[0], |m, v| if v > m { v } else { m });
                        let s: f32 = z.iter().map(|&v| (v - m).exp()).sum();
                        let lse = m + s.ln();
                        let pr: f32 = (0..k).map(|j| (z[j] - lse).exp() * rr[j]).sum();
                        for j in 0..k {
                            h[r * k + j] = (z[j] - lse).exp() * (rr[j] - pr) * inv_b;
                        }
                    } else {
                        let two_inv_n = 2.0f32 / (rows * k) as f32;
                        for j in 0..k {
                            h[r * k + j] = two_inv_n * rr[j];
                        }
                    }
                }
                self.wf(a.p(5), &h);
            }
            Kernel::CountCorrect => {
                let (rows, k) = (a.u(2), a.u(3));
                let out = self.f(a.p(0), rows * k);
                let labels = self.u(a.p(1), rows);
                let mut c = self.u(a.p(4), 1);
                c[0] += fdgr_kernel::mlp::correct(&out, k, &labels) as u32;
                self.wu(a.p(4), &c);
            }
            Kernel::Axpy => {
                let (al, n) = (a.f(1), a.q(3));
                let mut y = self.f(a.p(0), n);
                let x = self.f(a.p(2), n);
                for (yi, xi) in y.iter_mut().zip(&x) {
                    *yi += al * *xi;
                }
                self.wf(a.p(0), &y);
            }
            Kernel::Waxpy => {
                let (al, n) = (a.f(2), a.q(4));
                let x = self.f(a.p(1), n);
                let y = self.f(a.p(3), n);
                let w: Vec<f32> = x.iter().zip(&y).map(|(xi, yi)| *xi + al * *yi).collect();
                self.wf(a.p(0), &w);
            }
            Kernel::Scale => {
                let (al, n) = (a.f(1), a.q(2));
                let x: Vec<f32> = self.f(a.p(0), n).iter().map(|v| v * al).collect();
                self.wf(a.p(0), &x);
            }
            Kernel::DotPartial => {
                let n = a.q(2);
                let x = self.f(a.p(0), n);
                let y = self.f(a.p(1), n);
                let g = cfg.grid.0 as usize;
                let span = g * REDUCE_THREADS as usize;
                let mut part = vec![0.0f32; g];
                for i in 0..n {
                    part[(i % span) / REDUCE_THREADS as usize] += x[i] * y[i];
                }
                self.wf(a.p(3), &part);
            }
            Kernel::ReduceSum => {
                let (n, scale, acc) = (a.u(1), a.f(2), a.i(3));
                let v = self.f(a.p(0), n);
                let t: f32 = v.iter().sum();
                let prev = self.f(a.p(4), 1)[0];
                let out = (if acc != 0 { prev } else { 0.0 }) + t * scale;
                self.wf(a.p(4), &[out]);
            }
            Kernel::NonFinite => {
                let n = a.q(1);
                let mut bad = self.f(a.p(0), n).iter().any(|v| !v.is_finite());
                if let Some(s) = a.opt(2) {
                    bad |= !self.f(s, 1)[0].is_finite();
                }
                if bad {
                    self.wu(a.p(3), &[1]);
                }
            }
            Kernel::SgdUpdate => {
                if let Some(s) = a.opt(9) {
                    let f = self.u(s, 2);
                    if f[0] | f[1] != 0 {
                        return Ok(());
                    }
                }
                let n = a.q(3);
                let (lr, mu, nest, wd, first) = (a.f(4), a.f(5), a.i(6) != 0, a.f(7), a.i(8) != 0);
                let mut th = self.f(a.p(0), n);
                let d = self.f(a.p(1), n);
                let mut v = a.opt(2).map(|p| self.f(p, n));
                for i in 0..n {
                    let t = th[i];
                    let mut di = d[i];
                    if wd != 0.0 {
                        di += wd * t;
                    }
                    if let Some(v) = v.as_mut() {
                        if mu != 0.0 {
                            let vi = if first { di } else { mu * v[i] + di };
                            v[i] = vi;
                            di = if nest { di + mu * vi } else { vi };
                        }
                    }
                    th[i] = t - lr * di;
                }
                self.wf(a.p(0), &th);
                if let (Some(p), Some(v)) = (a.opt(2), v) {
                    self.wf(p, &v);
                }
            }
            Kernel::CommitStep => {
                let mut f = self.u(a.p(0), 4);
                if f[0] != 0 && f[1] == 0 {
                    f[1] = 1;
                    f[2] = a.u(1) as u32;
                    f[3] = a.u(2) as u32;
                }
                f[0] = 0;
                self.wu(a.p(0), &f);
            }
            Kernel::GatherRows => {
                let (rows, n0) = (a.u(3), a.u(4));
                let idx = self.u(a.p(2), rows);
                let mut xb = vec![0.0f32; rows * n0];
                let mut yb = vec![0u32; rows];
                for (r, &i) in idx.iter().enumerate() {
                    let src = self.f(a.p(0).at(i as usize * n0), n0);
                    xb[r * n0..(r + 1) * n0].copy_from_slice(&src);
                    yb[r] = self.u(a.p(1).at(i as usize), 1)[0];
                }
                self.wf(a.p(5), &xb);
                self.wu(a.p(6), &yb);
            }
        }
        Ok(())
    }
}
