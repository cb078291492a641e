//! # fdgr-cuda-cpu
//!
//! The CUDA C kernels of `gpu/kernels/` — the same, unmodified `.cu` files
//! that NVRTC compiles for the GPU — compiled with the host C++ compiler
//! against `cuda_cpu.h` (the CUDA built-ins on a CPU) and run on the
//! calling thread: blocks one after another, the threads of a block as
//! fibers, `__syncthreads` a real barrier (the execution model is described
//! in `cuda_cpu.h`).
//!
//! A test dependency of `fdgr-gpu` only (its device emulator launches the
//! kernels through [`CpuKernel::launch`]); the `fdgr` binary does not
//! contain it.
//!
//! The kernels are those of the kernel table, `gpu/kernels/table.rs`, in
//! its order ([`kernels`]); each carries its parameter types as the C++
//! compiler saw them ([`CpuKernel::params`]). Their `expf`, `logf`,
//! `tanhf` and `cosf` are the CPU kernel's (`fdgr_kernel::Real` for f32),
//! so that running a kernel here and the Rust it mirrors differ only where
//! the CUDA C differs.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Once, OnceLock};

use fdgr_kernel::Real;

/// One kernel as `cuda_cpu.h` lays it out (`struct fdgr_cpu_kernel`).
#[repr(C)]
struct RawKernel {
    name: *const c_char,
    file: *const c_char,
    signature: *const c_char,
    thread: unsafe extern "C" fn(*mut *mut c_void),
}

/// `struct fdgr_cpu_stats` of runtime.cpp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks run.
    pub blocks: u64,
    /// CUDA threads run.
    pub threads: u64,
    /// Block-wide barriers passed, summed over the blocks.
    pub barriers: u64,
    /// Fibers started: one per block for a kernel without barriers, one per
    /// thread for a kernel whose threads all wait at a barrier.
    pub fibers: u64,
}

extern "C" {
    fn fdgr_cpu_kernel_at(i: usize) -> *const RawKernel;
    #[cfg(test)]
    fn fdgr_cpu_selftest_at(i: usize) -> *const RawKernel;
    fn fdgr_cpu_set_math(
        exp: extern "C" fn(f32) -> f32,
        log: extern "C" fn(f32) -> f32,
        tanh: extern "C" fn(f32) -> f32,
        cos: extern "C" fn(f32) -> f32,
    );
    fn fdgr_cpu_launch(
        k: *const RawKernel,
        grid: *const u32,
        block: *const u32,
        args: *mut *mut c_void,
        stats: *mut Stats,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// A kernel parameter's type, as compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// `float`.
    F32,
    /// `unsigned int` (`u32`).
    U32,
    /// `int`.
    I32,
    /// `unsigned long long` (`u64`).
    U64,
    /// `float*`; `write` is false for `const float*`.
    PtrF32 {
        /// Not `const`.
        write: bool,
    },
    /// `unsigned int*`; `write` is false for `const unsigned int*`.
    PtrU32 {
        /// Not `const`.
        write: bool,
    },
}

impl Param {
    fn parse(s: &str) -> Option<Param> {
        Some(match s {
            "f32" => Param::F32,
            "u32" => Param::U32,
            "i32" => Param::I32,
            "u64" => Param::U64,
            "f32*" => Param::PtrF32 { write: true },
            "const f32*" => Param::PtrF32 { write: false },
            "u32*" => Param::PtrU32 { write: true },
            "const u32*" => Param::PtrU32 { write: false },
            _ => return None,
        })
    }

    /// Whether this is a pointer.
    pub fn is_ptr(self) -> bool {
        matches!(self, Param::PtrF32 { .. } | Param::PtrU32 { .. })
    }
}

/// One argument value, as [`CpuKernel::launch`] passes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A pointer (may be null for the kernels' nullable parameters).
    Ptr(*mut c_void),
    /// `float`.
    F32(f32),
    /// `unsigned int`.
    U32(u32),
    /// `int`.
    I32(i32),
    /// `unsigned long long`.
    U64(u64),
}

/// Storage of one argument, aligned for any parameter type.
#[repr(C)]
#[derive(Clone, Copy)]
union Slot {
    p: *mut c_void,
    f: f32,
    u: u32,
    i: i32,
    q: u64,
}

/// A kernel compiled for the CPU.
pub struct CpuKernel {
    raw: &'static RawKernel,
    name: &'static str,
    file: &'static str,
    params: Vec<Param>,
}

// SAFETY: RawKernel is immutable static data (string literals and a
// function pointer) defined by the C++ build.
unsafe impl Sync for RawKernel {}

fn text(p: *const c_char) -> &'static str {
    // SAFETY: the C++ build stores string literals here.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .expect("kernel table strings are ASCII")
}

extern "C" fn exp(x: f32) -> f32 {
    Real::exp(x)
}
extern "C" fn log(x: f32) -> f32 {
    Real::ln(x)
}
extern "C" fn tanh(x: f32) -> f32 {
    Real::tanh(x)
}
extern "C" fn cos(x: f32) -> f32 {
    Real::cos(x)
}

/// Makes the kernels' expf, logf, tanhf and cosf the CPU kernel's
/// (`fdgr_kernel::Real` for f32), once, before any kernel can be launched.
fn install_math() {
    static ONCE: Once = Once::new();
    // SAFETY: plain function pointers with the C signature `float (float)`;
    // set once, before any launch (every launch goes through a kernel
    // obtained after this).
    ONCE.call_once(|| unsafe { fdgr_cpu_set_math(exp, log, tanh, cos) });
}

fn load(at: unsafe extern "C" fn(usize) -> *const RawKernel) -> Vec<CpuKernel> {
    install_math();
    let mut v = vec![];
    for i in 0.. {
        // SAFETY: the registry returns null past its end.
        let p = unsafe { at(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: non-null entries point to static data.
        let raw: &'static RawKernel = unsafe { &*p };
        let sig = text(raw.signature);
        let params = if sig.is_empty() {
            vec![]
        } else {
            sig.split(',')
                .map(|s| Param::parse(s).unwrap_or_else(|| panic!("unknown parameter type {s:?}")))
                .collect()
        };
        v.push(CpuKernel {
            raw,
            name: text(raw.name),
            file: text(raw.file),
            params,
        });
    }
    v
}

/// The kernels of the table `gpu/kernels/table.rs`, in its order.
pub fn kernels() -> &'static [CpuKernel] {
    static K: OnceLock<Vec<CpuKernel>> = OnceLock::new();
    K.get_or_init(|| load(fdgr_cpu_kernel_at))
}

/// The kernel whose C name is `name`.
pub fn find(name: &str) -> Option<&'static CpuKernel> {
    kernels().iter().find(|k| k.name == name)
}

/// A test kernel of the runtime itself (selftest.cu).
#[cfg(test)]
fn selftest(name: &str) -> &'static CpuKernel {
    static K: OnceLock<Vec<CpuKernel>> = OnceLock::new();
    K.get_or_init(|| load(fdgr_cpu_selftest_at))
        .iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no self-test kernel {name}"))
}

impl CpuKernel {
    /// The C name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The `.cu` file that defines it.
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// Its parameters, as the C++ compiler saw the `.cu` declaration.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Runs the kernel on the calling thread with `grid` × `block` threads
    /// (x, y, z) and `args` in the order of its parameters; returns what
    /// the launch did, or why it failed (an argument of the wrong type,
    /// a launch configuration CUDA rejects, a barrier reached by only some
    /// threads of a block).
    ///
    /// # Safety
    ///
    /// Every pointer argument must be valid for all the accesses the
    /// kernel makes through it with these arguments (or null where the
    /// kernel accepts null), as for a launch on a GPU.
    pub unsafe fn launch(
        &self,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Value],
    ) -> Result<Stats, String> {
        if args.len() != self.params.len() {
            return Err(format!(
                "{}: {} arguments for {} parameters",
                self.name,
                args.len(),
                self.params.len()
            ));
        }
        let mut slots = Vec::with_capacity(args.len());
        for (i, (p, a)) in self.params.iter().zip(args).enumerate() {
            let s = match (p, a) {
                (Param::PtrF32 { .. } | Param::PtrU32 { .. }, Value::Ptr(v)) => Slot { p: *v },
                (Param::F32, Value::F32(v)) => Slot { f: *v },
                (Param::U32, Value::U32(v)) => Slot { u: *v },
                (Param::I32, Value::I32(v)) => Slot { i: *v },
                (Param::U64, Value::U64(v)) => Slot { q: *v },
                _ => {
                    return Err(format!(
                        "{} argument {i}: {p:?} expected, got {a:?}",
                        self.name
                    ))
                }
            };
            slots.push(s);
        }
        let mut argv: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut Slot as *mut c_void)
            .collect();
        let mut stats = Stats::default();
        let mut err = [0 as c_char; 512];
        // SAFETY: argv holds one pointer per parameter, each to a value of
        // that parameter's type (checked above); the pointers inside are the
        // caller's responsibility.
        let rc = unsafe {
            fdgr_cpu_launch(
                self.raw,
                grid.as_ptr(),
                block.as_ptr(),
                argv.as_mut_ptr(),
                &mut stats,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 0 {
            Ok(stats)
        } else {
            // SAFETY: runtime.cpp writes a NUL-terminated message.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
            Err(msg.to_string_lossy().into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr<T>(v: &mut [T]) -> Value {
        Value::Ptr(v.as_mut_ptr() as *mut c_void)
    }

    #[test]
    fn signatures_come_from_the_compiler() {
        let k = find("opt_update").expect("opt_update");
        use Param::*;
        assert_eq!(
            k.params(),
            [
                PtrF32 { write: true },
                PtrF32 { write: false },
                PtrF32 { write: true },
                PtrF32 { write: true },
                U64,
                I32,
                F32,
                F32,
                I32,
                F32,
                I32,
                F32,
                F32,
                F32,
                F32,
                F32,
                F32,
                F32,
                PtrU32 { write: false }
            ]
        );
        assert_eq!(k.file(), "optim.cu");
        assert_eq!(
            find("gather_rows").unwrap().params()[0],
            PtrF32 { write: false }
        );
        assert!(find("no_such_kernel").is_none());
    }

    /// Neighbours read each other's shared-memory writes across barriers,
    /// in blocks of every size up to 1024 and in 3-D blocks.
    #[test]
    fn syncthreads_is_a_barrier() {
        let k = selftest("st_barrier_neighbour");
        for block in [
            [1, 1, 1],
            [2, 1, 1],
            [33, 1, 1],
            [256, 1, 1],
            [1024, 1, 1],
            [4, 3, 5],
        ] {
            let n = (block[0] * block[1] * block[2]) as usize;
            let blocks = 3;
            let mut out = vec![0u32; n * blocks];
            // SAFETY: out holds blocks × n values, as the kernel writes.
            let st = unsafe { k.launch([blocks as u32, 1, 1], block, &[ptr(&mut out)]) }.unwrap();
            for b in 0..blocks {
                for t in 0..n {
                    // thread t reads 2·(value of thread t−1's neighbour t) = 2·(t + 1)
                    let want = 2 * (t as u32 + 1 + 1000 * b as u32);
                    assert_eq!(out[b * n + t], want, "block {block:?} b {b} t {t}");
                }
            }
            assert_eq!(st.blocks, blocks as u64);
            assert_eq!(st.threads, (blocks * n) as u64);
            assert_eq!(st.barriers, 3 * blocks as u64);
            // every thread waits at the barrier: each has its own fiber
            assert_eq!(st.fibers, (blocks * n) as u64);
        }
    }

    #[test]
    fn tree_sum_in_shared_memory() {
        let k = selftest("st_tree_sum");
        for threads in [1u32, 2, 64, 256, 1024] {
            let blocks = 2usize;
            let v: Vec<f32> = (0..threads as usize * blocks)
                .map(|i| (i % 17) as f32)
                .collect();
            let mut vv = v.clone();
            let mut out = vec![f32::NAN; blocks];
            // SAFETY: v has blocks × threads values, out one per block.
            let st = unsafe {
                k.launch(
                    [blocks as u32, 1, 1],
                    [threads, 1, 1],
                    &[ptr(&mut vv), ptr(&mut out)],
                )
            }
            .unwrap();
            for b in 0..blocks {
                let want: f32 = v[b * threads as usize..(b + 1) * threads as usize]
                    .iter()
                    .sum();
                assert_eq!(out[b], want, "{threads} threads, block {b}");
            }
            assert_eq!(
                st.barriers,
                blocks as u64 * (1 + threads.trailing_zeros() as u64)
            );
        }
    }

    #[test]
    fn coordinates_of_every_thread() {
        let k = selftest("st_coordinates");
        let (grid, block) = ([3u32, 2, 2], [4u32, 2, 3]);
        let nb = (grid[0] * grid[1] * grid[2]) as usize;
        let nt = (block[0] * block[1] * block[2]) as usize;
        let mut out = vec![u32::MAX; 8 * nb * nt];
        // SAFETY: 8 values per thread of the grid.
        let st = unsafe { k.launch(grid, block, &[ptr(&mut out)]) }.unwrap();
        assert_eq!(st.fibers, nb as u64, "no barrier: one fiber per block");
        let mut i = 0;
        for bz in 0..grid[2] {
            for by in 0..grid[1] {
                for bx in 0..grid[0] {
                    for tz in 0..block[2] {
                        for ty in 0..block[1] {
                            for tx in 0..block[0] {
                                assert_eq!(
                                    out[8 * i..8 * i + 8],
                                    [tx, ty, tz, bx, by, bz, 40203, 30202]
                                );
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn atomic_add_returns_distinct_old_values() {
        let k = selftest("st_atomics");
        let n = 5 * 96;
        let mut counter = [0u32];
        let mut taken = vec![0u32; n];
        let mut fsum = [0.0f32];
        // SAFETY: n tickets, one counter, one float.
        unsafe {
            k.launch(
                [5, 1, 1],
                [32, 3, 1],
                &[ptr(&mut counter), ptr(&mut taken), ptr(&mut fsum)],
            )
        }
        .unwrap();
        assert_eq!(counter[0], n as u32);
        assert!(taken.iter().all(|&t| t == 1));
        assert_eq!(fsum[0], 0.5 * n as f32);
    }

    #[test]
    fn grid_stride_with_any_grid() {
        let k = selftest("st_grid_stride");
        for (grid, block, n) in [(1u32, 1u32, 10u64), (3, 32, 1000), (7, 256, 1_000_003)] {
            let mut out = vec![0u32; n as usize];
            // SAFETY: n values.
            unsafe { k.launch([grid, 1, 1], [block, 1, 1], &[ptr(&mut out), Value::U64(n)]) }
                .unwrap();
            assert!(out.iter().all(|&v| v == 1), "grid {grid} block {block}");
        }
    }

    #[test]
    fn launch_errors() {
        let k = selftest("st_divergent_barrier");
        let mut out = vec![0u32; 64];
        // SAFETY: 64 values.
        let e = unsafe { k.launch([1, 1, 1], [64, 1, 1], &[ptr(&mut out)]) }.unwrap_err();
        assert!(
            e.contains("st_divergent_barrier") && e.contains("divergent"),
            "{e}"
        );
        // the thread is usable again after the failed launch
        let k = selftest("st_grid_stride");
        unsafe { k.launch([1, 1, 1], [64, 1, 1], &[ptr(&mut out), Value::U64(64)]) }.unwrap();
        assert!(out.iter().all(|&v| v == 1));
        for (grid, block) in [
            ([0, 1, 1], [1, 1, 1]),
            ([1, 1, 1], [1025, 1, 1]),
            ([1, 1, 1], [32, 32, 2]),
            ([1, 70000, 1], [1, 1, 1]),
        ] {
            let e = unsafe { k.launch(grid, block, &[ptr(&mut out), Value::U64(0)]) }.unwrap_err();
            assert!(e.contains("invalid launch configuration"), "{e}");
        }
        let e = unsafe { k.launch([1, 1, 1], [1, 1, 1], &[ptr(&mut out)]) }.unwrap_err();
        assert!(e.contains("1 arguments for 2 parameters"), "{e}");
        let e =
            unsafe { k.launch([1, 1, 1], [1, 1, 1], &[ptr(&mut out), Value::U32(3)]) }.unwrap_err();
        assert!(e.contains("argument 1: U64 expected"), "{e}");
    }

    /// Launches on several OS threads at once keep their own state.
    #[test]
    fn concurrent_launches_from_several_threads() {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let k = selftest("st_barrier_neighbour");
                    for _ in 0..20 {
                        let mut out = vec![0u32; 2 * 128];
                        unsafe { k.launch([2, 1, 1], [128, 1, 1], &[ptr(&mut out)]) }.unwrap();
                        for (i, v) in out.iter().enumerate() {
                            let (b, t) = (i / 128, i % 128);
                            assert_eq!(*v, 2 * (t as u32 + 1 + 1000 * b as u32));
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
