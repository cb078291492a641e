//! A QEMU TCG plugin that counts executed guest instructions exactly and
//! records the count each time the instruction at one address (the
//! firmware's `fdgr_mark`) executes.
//!
//! ```text
//! qemu-system-arm ... -plugin libfdgr_qemu_icount.so,marker=0x1234,out=counts.txt
//! ```
//!
//! `out` then holds `total <n>` and one `mark <n>` line per marker hit,
//! where `<n>` counts every instruction executed so far, the marker
//! instruction included.
//!
//! With `profile=<file>` it also counts, per guest address, the
//! instructions executed inside the measured windows (after the third
//! marker hit and every second one after it, up to the next: the
//! firmware's steps, the first two hits being its calibration) and writes
//! one `<address in hex> <count>` line per executed address at exit;
//! `cargo xtask firmware` maps them to the ELF's functions. The marker's
//! own instructions inside a window are counted under it. Only callbacks are used (no inline operations),
//! so the same source builds for every plugin API version: set
//! `FDGR_QEMU_PLUGIN_VERSION` at build time to the version the QEMU in use
//! accepts (default 1, as QEMU 7.2 wants; QEMU 9 and later want 2 or more).
//! `cargo xtask firmware` tries 1 to 4 and keeps the first QEMU loads.
//!
//! Every instruction gets an execution callback, so the count is exact
//! even where a translation block is left early (an exception, a
//! semihosting call).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

const fn parse_version(s: Option<&str>) -> c_int {
    let Some(s) = s else { return 1 };
    let b = s.as_bytes();
    let mut v: c_int = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "FDGR_QEMU_PLUGIN_VERSION must be a number"
        );
        v = v * 10 + (b[i] - b'0') as c_int;
        i += 1;
    }
    v
}

/// The plugin API version this build declares (read by QEMU at load).
#[no_mangle]
#[used]
pub static qemu_plugin_version: c_int = parse_version(option_env!("FDGR_QEMU_PLUGIN_VERSION"));

type PluginId = u64;

/// Opaque QEMU handles.
#[repr(C)]
pub struct Tb {
    _p: [u8; 0],
}

/// Opaque QEMU handles.
#[repr(C)]
pub struct Insn {
    _p: [u8; 0],
}

/// `QEMU_PLUGIN_CB_NO_REGS`.
const CB_NO_REGS: c_int = 0;

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: extern "C" fn(PluginId, *mut Tb));
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const Tb, idx: usize) -> *mut Insn;
    fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: extern "C" fn(c_uint, *mut c_void),
        flags: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_register_atexit_cb(
        id: PluginId,
        cb: extern "C" fn(PluginId, *mut c_void),
        userdata: *mut c_void,
    );
}

static COUNT: AtomicU64 = AtomicU64::new(0);
static MARKER: AtomicU64 = AtomicU64::new(u64::MAX);
static MARKS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static OUT: OnceLock<String> = OnceLock::new();
/// Where the per-address profile goes (`profile=`), if anywhere.
static PROFILE: OnceLock<String> = OnceLock::new();
/// Whether execution is inside a measured window (see the module docs).
static INSIDE: AtomicBool = AtomicBool::new(false);
/// Every translated instruction's counter, with its address (an address
/// translated twice has two counters; they are added up at exit).
static COUNTERS: Mutex<Vec<(u64, &'static AtomicU64)>> = Mutex::new(Vec::new());

extern "C" fn on_insn(_vcpu: c_uint, _u: *mut c_void) {
    COUNT.fetch_add(1, Ordering::Relaxed);
}

/// [`on_insn`] and the instruction's own counter inside a window.
extern "C" fn on_insn_profiled(_vcpu: c_uint, u: *mut c_void) {
    COUNT.fetch_add(1, Ordering::Relaxed);
    if INSIDE.load(Ordering::Relaxed) {
        // SAFETY: `u` is a leaked `AtomicU64` made in `on_trans`.
        unsafe { &*(u as *const AtomicU64) }.fetch_add(1, Ordering::Relaxed);
    }
}

extern "C" fn on_mark(_vcpu: c_uint, _u: *mut c_void) {
    let n = COUNT.load(Ordering::Relaxed);
    if let Ok(mut m) = MARKS.lock() {
        m.push(n);
        // hits 3, 5, 7, … (1-based) open a window, 4, 6, … close it
        INSIDE.store(m.len() >= 3 && m.len() % 2 == 1, Ordering::Relaxed);
    }
}

extern "C" fn on_trans(_id: PluginId, tb: *mut Tb) {
    let marker = MARKER.load(Ordering::Relaxed);
    let profiled = PROFILE.get().is_some();
    // SAFETY: QEMU hands a valid translation block for this callback.
    unsafe {
        for i in 0..qemu_plugin_tb_n_insns(tb) {
            let insn = qemu_plugin_tb_get_insn(tb, i);
            let addr = qemu_plugin_insn_vaddr(insn);
            if profiled {
                let c: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
                if let Ok(mut all) = COUNTERS.lock() {
                    all.push((addr, c));
                }
                let u = c as *const AtomicU64 as *mut c_void;
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn_profiled, CB_NO_REGS, u);
            } else {
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn,
                    on_insn,
                    CB_NO_REGS,
                    std::ptr::null_mut(),
                );
            }
            if addr == marker {
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn,
                    on_mark,
                    CB_NO_REGS,
                    std::ptr::null_mut(),
                );
            }
        }
    }
}

extern "C" fn on_exit(_id: PluginId, _u: *mut c_void) {
    let mut s = format!("total {}\n", COUNT.load(Ordering::Relaxed));
    if let Ok(m) = MARKS.lock() {
        for n in m.iter() {
            s.push_str(&format!("mark {n}\n"));
        }
    }
    match OUT.get() {
        Some(p) => {
            if let Err(e) = std::fs::write(p, s) {
                eprintln!("fdgr-qemu-icount: cannot write {p}: {e}");
            }
        }
        None => eprint!("{s}"),
    }
    if let Some(p) = PROFILE.get() {
        let mut per: std::collections::BTreeMap<u64, u64> = Default::default();
        if let Ok(all) = COUNTERS.lock() {
            for (a, c) in all.iter() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    *per.entry(*a).or_default() += n;
                }
            }
        }
        let mut s = String::new();
        for (a, n) in per {
            s.push_str(&format!("{a:x} {n}\n"));
        }
        if let Err(e) = std::fs::write(p, s) {
            eprintln!("fdgr-qemu-icount: cannot write {p}: {e}");
        }
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Plugin entry point: arguments `marker=<address>` (required),
/// `out=<file>` (default: stderr at exit) and `profile=<file>` (the
/// per-address counts; none by default).
///
/// # Safety
///
/// Called by QEMU with `argc` valid C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let mut have_marker = false;
    for i in 0..argc.max(0) as usize {
        let arg = CStr::from_ptr(*argv.add(i)).to_string_lossy();
        if let Some(v) = arg.strip_prefix("marker=") {
            match parse_u64(v) {
                Some(a) => {
                    MARKER.store(a & !1, Ordering::Relaxed);
                    have_marker = true;
                }
                None => {
                    eprintln!("fdgr-qemu-icount: bad marker address {v}");
                    return -1;
                }
            }
        } else if let Some(v) = arg.strip_prefix("out=") {
            let _ = OUT.set(v.to_string());
        } else if let Some(v) = arg.strip_prefix("profile=") {
            let _ = PROFILE.set(v.to_string());
        } else {
            eprintln!("fdgr-qemu-icount: unknown argument {arg}");
            return -1;
        }
    }
    if !have_marker {
        eprintln!("fdgr-qemu-icount: marker=<address> is required");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    0
}
