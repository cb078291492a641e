//! Tests of the record store: a simulated NOR flash with power cuts and wear.

use super::*;
use embedded_storage::nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use std::vec::Vec;
use std::{println, vec};

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MockErr {
    Cut,
    Misuse,
}
impl NorFlashError for MockErr {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MockErr::Cut => NorFlashErrorKind::Other,
            MockErr::Misuse => NorFlashErrorKind::NotAligned,
        }
    }
}

/// NOR flash in RAM: erase sets a unit to 0xFF, programming ANDs (it
/// can only clear bits); setting a bit, programming a word twice
/// between erases, or a misaligned access counts as a violation. Power
/// can be cut at a given program/erase operation after a prefix of its
/// words, optionally with the next word half programmed (a random
/// subset of its bit clears); the cut operation and all later calls fail.
#[derive(Clone)]
struct Mock<const R: usize, const W: usize, const E: usize> {
    mem: Vec<u8>,
    programmed: Vec<bool>,
    ops: usize,
    cut: Option<(usize, usize, Option<u64>)>,
    dead: bool,
    violations: usize,
    erases: usize,
    max_write: usize,
    log: Vec<usize>,
}

impl<const R: usize, const W: usize, const E: usize> Mock<R, W, E> {
    fn new(size: usize) -> Self {
        Mock {
            mem: vec![0xFF; size],
            programmed: vec![false; size / W],
            ops: 0,
            cut: None,
            dead: false,
            violations: 0,
            erases: 0,
            max_write: 0,
            log: Vec::new(),
        }
    }
    /// Cut power `k` operations from now, letting `words` words of that
    /// operation land (and half-programming the next with `partial`).
    fn arm(&mut self, k: usize, words: usize, partial: Option<u64>) {
        self.cut = Some((self.ops + k, words, partial));
    }
    fn reboot(&mut self) {
        self.cut = None;
        self.dead = false;
    }
    /// Words this operation may complete before the cut, if it is cut.
    fn start(&mut self, words: usize) -> Result<usize, (usize, Option<u64>)> {
        let i = self.ops;
        self.ops += 1;
        self.log.push(words);
        match self.cut {
            Some((k, w, p)) if k == i => {
                self.dead = true;
                Err((w.min(words), p))
            }
            _ => Ok(words),
        }
    }
}

impl<const R: usize, const W: usize, const E: usize> ErrorType for Mock<R, W, E> {
    type Error = MockErr;
}

impl<const R: usize, const W: usize, const E: usize> ReadNorFlash for Mock<R, W, E> {
    const READ_SIZE: usize = R;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MockErr> {
        if self.dead {
            return Err(MockErr::Cut);
        }
        let o = offset as usize;
        if o % R != 0 || bytes.len() % R != 0 || o + bytes.len() > self.mem.len() {
            self.violations += 1;
            return Err(MockErr::Misuse);
        }
        bytes.copy_from_slice(&self.mem[o..o + bytes.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const R: usize, const W: usize, const E: usize> NorFlash for Mock<R, W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), MockErr> {
        if self.dead {
            return Err(MockErr::Cut);
        }
        let (f, t) = (from as usize, to as usize);
        if f % E != 0 || t % E != 0 || f > t || t > self.mem.len() {
            self.violations += 1;
            return Err(MockErr::Misuse);
        }
        let (n, cut) = match self.start((t - f) / W) {
            Ok(n) => (n, false),
            Err((n, _)) => (n, true),
        };
        self.mem[f..f + n * W].fill(0xFF);
        self.programmed[f / W..f / W + n].fill(false);
        if cut {
            return Err(MockErr::Cut);
        }
        self.erases += (t - f) / E;
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), MockErr> {
        if self.dead {
            return Err(MockErr::Cut);
        }
        let o = offset as usize;
        if o % W != 0 || bytes.len() % W != 0 || o + bytes.len() > self.mem.len() {
            self.violations += 1;
            return Err(MockErr::Misuse);
        }
        self.max_write = self.max_write.max(bytes.len());
        let words = bytes.len() / W;
        let (n, partial) = match self.start(words) {
            Ok(n) => (n, None),
            Err((n, p)) => (n, Some(p)),
        };
        for w in 0..n {
            let i = o / W + w;
            if self.programmed[i] {
                self.violations += 1;
            }
            self.programmed[i] = true;
            for b in 0..W {
                let (old, new) = (&mut self.mem[i * W + b], bytes[w * W + b]);
                if new & !*old != 0 {
                    self.violations += 1;
                }
                *old &= new;
            }
        }
        match partial {
            None => Ok(()),
            Some(p) => {
                if let (Some(seed), true) = (p, n < words) {
                    let mut r = Rng(seed);
                    let i = o / W + n;
                    for b in 0..W {
                        let m = r.next() as u8;
                        self.mem[i * W + b] &= bytes[n * W + b] | m;
                    }
                }
                Err(MockErr::Cut)
            }
        }
    }
}

type Sect = Mock<1, 4, 16384>;
type Page = Mock<1, 4, 4096>;

const A: u64 = 0xA11C_E000_0000_0001;
const B: u64 = 0xB0B0_0000_0000_0002;

fn payload(n: usize, tag: u64) -> Vec<u8> {
    let mut r = Rng(tag.wrapping_mul(0x1234_5678_9abc_def1) ^ n as u64);
    let mut v = vec![0u8; n];
    r.fill(&mut v);
    v
}

/// θ, optimizer state and the step as separate parts of odd lengths.
fn parts(p: &[u8]) -> [&[u8]; 3] {
    let a = p.len() / 3 + 1;
    let b = p.len().saturating_sub(5).max(a.min(p.len()));
    let a = a.min(b);
    [&p[..a], &p[a..b], &p[b..]]
}

fn save<F: NorFlash>(
    s: &mut Store,
    f: &mut F,
    model: u64,
    step: u64,
    p: &[u8],
) -> Result<SaveStats, StoreError<F::Error>> {
    s.save(f, model, step, &parts(p))
}

/// A fresh store reading the flash, as at boot.
fn boot<F: NorFlash>(cfg: Config, f: &mut F, model: u64, cap: usize) -> (Store, Restore, Vec<u8>)
where
    F::Error: core::fmt::Debug,
{
    let mut s = Store::new(cfg);
    let mut out = vec![0u8; cap];
    let r = s.restore(f, model, &mut out).unwrap();
    if let Restore::Restored { len, .. } = r {
        out.truncate(len);
    } else {
        out.clear();
    }
    (s, r, out)
}

#[test]
fn crc_and_sizes() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(record_len(10240, 4), Some(10280));
    assert_eq!(record_len(10241, 32), Some(32 + 10272 + 32));
    assert_eq!(record_len(0, 1), Some(40));
    assert_eq!(record_len(u32::MAX - 20, 4), None);
    assert!(newer(0, u32::MAX) && newer(5, 3) && !newer(3, 5));
    assert_ne!(model_id(b"a"), model_id(b"b"));
    assert!(core::mem::size_of::<Store>() <= 128);
}

#[test]
fn restore_into_parts() {
    let cfg = Config::new(0, 16384, 2);
    let mut f = Sect::new(2 * 16384);
    let (a, b, c) = (payload(1000, 3), payload(7, 4), payload(3001, 5));
    let mut s = Store::new(cfg);
    s.save(&mut f, A, 5, &[&a, &b, &c]).unwrap();
    let (mut x, mut y, mut z) = (vec![0u8; 1000], vec![0u8; 7], vec![0u8; 3001]);
    let r = Store::new(cfg)
        .restore_parts(&mut f, A, &mut [&mut x, &mut y, &mut z])
        .unwrap();
    assert_eq!(
        r,
        Restore::Restored {
            seq: 0,
            step: 5,
            len: 4008
        }
    );
    assert_eq!((x, y, z), (a, b, c));
    // too little room: an error, not a partial restore
    let mut small = vec![0u8; 4000];
    assert!(matches!(
        Store::new(cfg).restore_parts(&mut f, A, &mut [&mut small]),
        Err(StoreError::BufferTooSmall { needed: 4008 })
    ));
}

#[test]
fn store_round_trip_and_layout() {
    let cfg = Config::new(16384, 16384, 2);
    let mut f = Sect::new(4 * 16384);
    let p = payload(10240, 1);
    let mut s = Store::new(cfg);
    let st = save(&mut s, &mut f, A, 77, &p).unwrap();
    assert_eq!(st.record_len, 10280);
    assert_eq!(st.address, 16384);
    assert_eq!(st.erased, 1);
    assert_eq!(st.written, 10280);
    assert_eq!(st.writes, (32 + 10240usize).div_ceil(256) as u32 + 1);
    assert!(f.max_write <= 256);
    assert_eq!(&f.mem[16384..16388], b"FDS1");
    assert_eq!(&f.mem[16384 + 32..16384 + 32 + 10240], &p[..]);
    assert_eq!(&f.mem[16384 + 10276..16384 + 10280], b"DONE");
    let (_, r, out) = boot(cfg, &mut f, A, 20000);
    assert_eq!(
        r,
        Restore::Restored {
            seq: 0,
            step: 77,
            len: 10240
        }
    );
    assert_eq!(out, p);
    assert_eq!(f.violations, 0);
    // Outside the region nothing was touched.
    assert!(f.mem[..16384]
        .iter()
        .chain(&f.mem[3 * 16384..])
        .all(|&b| b == 0xFF));

    let mut small = [0u8; 100];
    let e = Store::new(cfg).restore(&mut f, A, &mut small).unwrap_err();
    assert_eq!(e, StoreError::BufferTooSmall { needed: 10240 });
    let e = save(&mut s, &mut f, A, 1, &payload(16384, 0)).unwrap_err();
    assert_eq!(
        e,
        StoreError::TooLarge {
            needed: 16424,
            slot: 16384
        }
    );
}

#[test]
fn store_rejects_bad_geometry() {
    let mut f = Page::new(8 * 4096);
    let mut out = [0u8; 4];
    for cfg in [
        Config::new(0, 4096, 1),
        Config::new(0, 2048, 2),
        Config::new(100, 4096, 2),
        Config::new(0, 4096, 9),
        Config::new(0, 0x8000_0000, 4),
    ] {
        let e = Store::new(cfg).restore(&mut f, A, &mut out).unwrap_err();
        assert!(matches!(e, StoreError::Geometry(_)), "{cfg:?}: {e:?}");
    }
    let mut f: Mock<64, 64, 4096> = Mock::new(8 * 4096);
    let e = Store::new(Config::new(0, 4096, 2))
        .restore(&mut f, A, &mut out)
        .unwrap_err();
    assert!(matches!(e, StoreError::Geometry(_)));
}

#[test]
fn store_restores_newest_and_reports_factory_reasons() {
    let cfg = Config::new(0, 8192, 3);
    let mut f = Page::new(6 * 4096);
    let (_, r, _) = boot(cfg, &mut f, A, 4096);
    assert_eq!(r, Restore::Factory(FactoryReason::Empty));

    let mut s = Store::new(cfg);
    for i in 0..5u64 {
        save(&mut s, &mut f, A, 10 * i, &payload(1000, i)).unwrap();
    }
    let (_, r, out) = boot(cfg, &mut f, A, 4096);
    assert_eq!(
        r,
        Restore::Restored {
            seq: 4,
            step: 40,
            len: 1000
        }
    );
    assert_eq!(out, payload(1000, 4));

    // Another model: ignored, and said so.
    let (_, r, _) = boot(cfg, &mut f, B, 4096);
    assert_eq!(r, Restore::Factory(FactoryReason::OtherModel));
    // Its saves do not hide ours while ours are still there.
    let (mut sb, _, _) = boot(cfg, &mut f, B, 4096);
    save(&mut sb, &mut f, B, 3, &payload(500, 99)).unwrap();
    let (_, r, out) = boot(cfg, &mut f, A, 4096);
    assert_eq!(
        r,
        Restore::Restored {
            seq: 4,
            step: 40,
            len: 1000
        }
    );
    assert_eq!(out, payload(1000, 4));
    let (_, r, out) = boot(cfg, &mut f, B, 4096);
    assert_eq!(
        r,
        Restore::Restored {
            seq: 5,
            step: 3,
            len: 500
        }
    );
    assert_eq!(out, payload(500, 99));

    // Contents that are not records.
    let mut g = Page::new(6 * 4096);
    Rng(5).fill(&mut g.mem);
    let (mut s, r, _) = boot(cfg, &mut g, A, 4096);
    assert_eq!(r, Restore::Factory(FactoryReason::Corrupt));
    save(&mut s, &mut g, A, 1, &payload(64, 1)).unwrap();
    let (_, r, out) = boot(cfg, &mut g, A, 4096);
    assert_eq!(
        r,
        Restore::Restored {
            seq: 0,
            step: 1,
            len: 64
        }
    );
    assert_eq!(out, payload(64, 1));

    // A torn first save.
    let mut h = Page::new(6 * 4096);
    h.arm(4, 0, None);
    assert!(save(&mut Store::new(cfg), &mut h, A, 1, &payload(1000, 1)).is_err());
    h.reboot();
    let (_, r, _) = boot(cfg, &mut h, A, 4096);
    assert_eq!(r, Restore::Factory(FactoryReason::Corrupt));
    assert_eq!(f.violations + g.violations + h.violations, 0);
}

#[test]
fn store_wraps_slots_and_counts_erases() {
    // 1,040-byte records, 7 per 2-page slot, 3 slots.
    let cfg = Config::new(4096, 8192, 3);
    let mut f = Page::new(8 * 4096);
    let mut s = Store::new(cfg);
    let mut erased = 0;
    for i in 0..100u64 {
        let p = payload(1000, i);
        let st = save(&mut s, &mut f, A, i, &p).unwrap();
        let slot = (i / 7) % 3;
        assert_eq!(st.erased, if i % 7 == 0 { 2 } else { 0 }, "save {i}");
        assert_eq!(st.address as u64, 4096 + slot * 8192 + (i % 7) * 1040);
        erased += st.erased;
        if i % 9 == 0 {
            let (_, r, out) = boot(cfg, &mut f, A, 1000);
            assert_eq!(
                r,
                Restore::Restored {
                    seq: i as u32,
                    step: i,
                    len: 1000
                }
            );
            assert_eq!(out, p);
        }
    }
    assert_eq!(erased, 30);
    assert_eq!(s.totals().erases, 30);
    assert_eq!(s.totals().saves, 100);
    assert_eq!(s.totals().written, 100 * 1040);
    assert_eq!(f.erases, 30);
    assert_eq!(f.violations, 0);
    assert!((s.totals().erases_per_1000_steps(1000) - 30.0).abs() < 1e-6);

    // Sequence numbers wrap.
    let mut f = Page::new(8 * 4096);
    let (mut s, _, _) = boot(cfg, &mut f, A, 1000);
    s.scan.as_mut().unwrap().next_seq = u32::MAX - 3;
    for i in 0..12u64 {
        save(&mut s, &mut f, A, 1000 + i, &payload(1000, 1000 + i)).unwrap();
        let (_, r, out) = boot(cfg, &mut f, A, 1000);
        let seq = (u32::MAX - 3).wrapping_add(i as u32);
        assert_eq!(
            r,
            Restore::Restored {
                seq,
                step: 1000 + i,
                len: 1000
            }
        );
        assert_eq!(out, payload(1000, 1000 + i));
    }
}

struct CutReport {
    points: usize,
    second: usize,
    old: usize,
    new: usize,
    erasing: usize,
}

/// Makes `saves` saves of `len`-byte payloads; for each, cuts power at
/// every operation of the save, letting 0, 1, half, all but one of its
/// words land (and once more with the next word half programmed), then
/// reboots: the restored state must be the previous payload or the new
/// one, bit for bit, and a save after the cut must work.
fn cut_everywhere<const R: usize, const W: usize, const E: usize>(
    cfg: Config,
    len: usize,
    saves: u64,
) -> CutReport {
    let size = (cfg.offset + cfg.slot_size * cfg.slots) as usize + E;
    let mut base: Mock<R, W, E> = Mock::new(size);
    let mut prev: Option<Vec<u8>> = None;
    let mut rep = CutReport {
        points: 0,
        second: 0,
        old: 0,
        new: 0,
        erasing: 0,
    };
    for n in 0..saves {
        let new = payload(len, n);
        // A clean save, to learn its operations.
        let mut clean = base.clone();
        let (mut s, _, _) = boot(cfg, &mut clean, A, len);
        let (ops0, log0) = (clean.ops, clean.log.len());
        let st = save(&mut s, &mut clean, A, n, &new).unwrap();
        let words: Vec<usize> = clean.log[log0..].to_vec();
        assert_eq!(clean.ops - ops0, words.len());
        let erasing = st.erased > 0;
        for (k, &w) in words.iter().enumerate() {
            let mut tears = vec![(0, None), (1, None), (w / 2, None), (w - 1, None)];
            tears.push((w / 2, Some(n * 1000 + k as u64)));
            tears.dedup();
            for (t, partial) in tears {
                let mut m = base.clone();
                let (mut s, _, _) = boot(cfg, &mut m, A, len);
                m.arm(k, t, partial);
                let e = save(&mut s, &mut m, A, n, &new).unwrap_err();
                assert_eq!(e, StoreError::Flash(MockErr::Cut));
                m.reboot();
                let (mut s, r, out) = boot(cfg, &mut m, A, len);
                rep.points += 1;
                rep.erasing += erasing as usize;
                match (&prev, r) {
                    (_, Restore::Restored { step, .. }) if out == new => {
                        assert_eq!(step, n);
                        rep.new += 1;
                    }
                    (Some(p), Restore::Restored { step, .. }) => {
                        assert!(out == *p, "save {n}, op {k}, tear {t}: mixed state");
                        assert_eq!(step, n - 1);
                        rep.old += 1;
                    }
                    (None, Restore::Factory(_)) => rep.old += 1,
                    (_, r) => panic!("save {n}, op {k}, tear {t}: {r:?}"),
                }
                // The device goes on, and power fails again in its
                // next save (on its first operation, in its middle):
                // what was restored, or the next state.
                let next = payload(len, 10_000 + n);
                let now = out;
                for second in [0, words.len() / 2] {
                    let mut m2 = m.clone();
                    let (mut s2, _, _) = boot(cfg, &mut m2, A, len);
                    m2.arm(second, 1, None);
                    assert!(save(&mut s2, &mut m2, A, n + 1, &next).is_err());
                    m2.reboot();
                    let (_, _, out) = boot(cfg, &mut m2, A, len);
                    assert!(out == now || out == next, "save {n}, op {k}, then {second}");
                    assert_eq!(m2.violations, 0);
                    rep.second += 1;
                }
                // Or it does not: the next save works and wins.
                save(&mut s, &mut m, A, n + 1, &next).unwrap();
                let (_, r, out) = boot(cfg, &mut m, A, len);
                assert!(matches!(r, Restore::Restored { .. }) && out == next);
                assert_eq!(m.violations, 0);
            }
        }
        // A cut after the last operation is a completed save.
        let (_, _, out) = boot(cfg, &mut clean, A, len);
        assert_eq!(out, new);
        rep.points += 1;
        rep.new += 1;
        rep.erasing += erasing as usize;
        base = clean;
        prev = Some(new);
    }
    rep
}

#[test]
fn store_power_cut_after_every_flash_operation() {
    let (mut total, mut second) = (0, 0);
    let mut report = |what: &str, r: &CutReport| {
        println!(
            "power cuts, {what}: {} cut points ({} in saves that erase), restored old {} / \
             new {}, 0 mixed, 0 lost; {} second cuts in the next save",
            r.points, r.erasing, r.old, r.new, r.second
        );
        total += r.points;
        second += r.second;
    };
    // 16 KB sectors, slots of 2 sectors: 3 records of 10 KB per slot,
    // so saves append inside a slot and erase the next one in turn.
    let r = cut_everywhere::<1, 4, 16384>(Config::new(0, 32768, 2), 10240, 8);
    report("2 x 32 KB slots of 16 KB sectors, 10 KB", &r);
    assert!(r.erasing > 0 && r.erasing < r.points && r.new > 0);
    // 2 x 16 KB sectors: every save erases the other slot.
    let r = cut_everywhere::<1, 4, 16384>(Config::new(16384, 16384, 2), 10240, 4);
    report("2 x 16 KB sectors, 10 KB", &r);
    assert_eq!(r.erasing, r.points);
    // 2 KB pages, 8-byte words read 4 bytes at a time, 3 slots of 12 KB.
    let mut cfg = Config::new(0, 12288, 3);
    cfg.chunk = 200;
    let r = cut_everywhere::<4, 8, 2048>(cfg, 5003, 7);
    report("3 x 12 KB slots of 2 KB pages, 5,003 B", &r);
    println!(
        "power cuts: {total} cut points and {second} second cuts, all restored old or new \
         bit for bit"
    );
}

fn random_sequences<const R: usize, const W: usize, const E: usize>(
    rng: &mut Rng,
    cfg: Config,
    len: usize,
) -> (usize, usize) {
    let size = (cfg.offset + cfg.slot_size * cfg.slots) as usize;
    let mut m: Mock<R, W, E> = Mock::new(size);
    if rng.below(4) == 0 {
        rng.fill(&mut m.mem);
    }
    let mut committed: Option<Vec<u8>> = None;
    let mut s = Store::new(cfg);
    let mut cuts = 0;
    let saves = 1 + rng.below(12);
    for n in 0..saves as u64 {
        let len = 1 + rng.below(len);
        let new = payload(len, rng.next());
        if rng.below(3) == 0 {
            s = Store::new(cfg);
        }
        // Operations of a save that erases: the slot's erases, the
        // record's program operations and the commit.
        let chunk = (cfg.chunk as usize).min(MAX_CHUNK).max(R.max(W));
        let ops = cfg.slot_size as usize / E + (32 + len).div_ceil(chunk) + 1;
        let cut = rng.below(2) == 0;
        if cut {
            let partial = if rng.below(2) == 0 {
                Some(rng.next())
            } else {
                None
            };
            m.arm(rng.below(ops + 2), rng.below(64), partial);
        }
        match s.save(&mut m, A, n, &parts(&new)) {
            Ok(_) => {
                m.reboot();
                committed = Some(new);
            }
            Err(e) => {
                assert!(cut && e == StoreError::Flash(MockErr::Cut), "{e:?}");
                cuts += 1;
                m.reboot();
                let mut out = vec![0u8; 8192];
                s = Store::new(cfg);
                match s.restore(&mut m, A, &mut out).unwrap() {
                    Restore::Restored { len: l, step, .. } => {
                        let got = &out[..l];
                        if got == &new[..] {
                            assert_eq!(step, n);
                            committed = Some(new);
                        } else {
                            assert_eq!(Some(got), committed.as_deref(), "lost or mixed state");
                        }
                    }
                    Restore::Factory(_) => assert!(committed.is_none()),
                }
            }
        }
        m.reboot();
    }
    let mut out = vec![0u8; 8192];
    let r = Store::new(cfg).restore(&mut m, A, &mut out).unwrap();
    match (r, &committed) {
        (Restore::Restored { len, .. }, Some(c)) => assert_eq!(&out[..len], &c[..]),
        (Restore::Factory(_), None) => {}
        (r, _) => panic!("{r:?}"),
    }
    assert_eq!(m.violations, 0);
    (saves, cuts)
}

#[test]
fn store_random_saves_with_random_cuts() {
    let mut rng = Rng(2024);
    let (mut saves, mut cuts) = (0, 0);
    for i in 0..1000 {
        let mut cfg;
        let (n, c) = match i % 4 {
            0 => random_sequences::<1, 4, 4096>(&mut rng, Config::new(0, 8192, 2), 6000),
            1 => random_sequences::<1, 1, 1024>(&mut rng, Config::new(0, 3072, 3), 2000),
            2 => {
                cfg = Config::new(0, 4096, 2);
                cfg.chunk = 8 + rng.below(300) as u32;
                random_sequences::<4, 8, 2048>(&mut rng, cfg, 1800)
            }
            _ => {
                cfg = Config::new(2048, 4096, 4);
                cfg.chunk = 32;
                random_sequences::<32, 32, 2048>(&mut rng, cfg, 3000)
            }
        };
        saves += n;
        cuts += c;
    }
    println!("random: 1000 sequences, {saves} saves, {cuts} cut by power, 0 lost or mixed");
    assert!(cuts > 1000);
}

#[test]
fn store_restore_survives_random_flash_images() {
    let cfg = Config::new(0, 2048, 3);
    let mut rng = Rng(7);
    let saved: Vec<Vec<u8>> = (0..6).map(|i| payload(300 + 97 * i, i as u64)).collect();
    let mut valid: Mock<1, 4, 1024> = Mock::new(6144);
    let mut s = Store::new(cfg);
    for (i, p) in saved.iter().enumerate() {
        save(&mut s, &mut valid, A, i as u64, p).unwrap();
    }
    let mut restored = [0usize; 3];
    for i in 0..10_000 {
        let mut m = valid.clone();
        m.programmed.fill(false);
        let kind = i % 3;
        match kind {
            // Random bytes.
            0 => rng.fill(&mut m.mem),
            // Mutations of a valid image.
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(m.mem.len());
                    match rng.below(3) {
                        0 => m.mem[at] ^= 1 << rng.below(8),
                        1 => m.mem[at] = rng.next() as u8,
                        _ => m.mem[at] = 0xFF,
                    }
                }
            }
            // Records with valid headers, some with a valid commit, at
            // random places, lengths, models and sequence numbers.
            _ => {
                for _ in 0..1 + rng.below(6) {
                    let at = 4 * rng.below(m.mem.len() / 4 - 10);
                    let len = match rng.below(3) {
                        0 => rng.next() as u32,
                        _ => rng.below(1200) as u32,
                    };
                    let mut h = [0u8; 32];
                    h[0..4].copy_from_slice(b"FDS1");
                    h[4..8].copy_from_slice(&(1000 + rng.below(64) as u32).to_le_bytes());
                    let model = if rng.below(2) == 0 { A } else { B };
                    h[8..16].copy_from_slice(&model.to_le_bytes());
                    let c = crc32(&h[..28]);
                    h[24..28].copy_from_slice(&len.to_le_bytes());
                    let c = if rng.below(8) == 0 {
                        c
                    } else {
                        crc32(&h[..28])
                    };
                    h[28..32].copy_from_slice(&c.to_le_bytes());
                    let end = (at + 32).min(m.mem.len());
                    m.mem[at..end].copy_from_slice(&h[..end - at]);
                    let pe = at + 32 + len as usize;
                    if rng.below(2) == 0 && pe + 8 <= m.mem.len() {
                        rng.fill(&mut m.mem[at + 32..pe]);
                        let crc = !crc_update(!0, &m.mem[at..pe]);
                        let t = pe.next_multiple_of(4);
                        m.mem[pe..t].fill(0xFF);
                        m.mem[t..t + 4].copy_from_slice(&crc.to_le_bytes());
                        m.mem[t + 4..t + 8].copy_from_slice(b"DONE");
                    }
                }
            }
        }
        let mut out = vec![0u8; 1500];
        let mut s = Store::new(cfg);
        match s.restore(&mut m, A, &mut out) {
            Ok(Restore::Restored { len, .. }) => {
                restored[kind] += 1;
                if kind < 2 {
                    assert!(saved.iter().any(|p| p[..] == out[..len]), "image {i}");
                }
            }
            Ok(Restore::Factory(_)) | Err(StoreError::BufferTooSmall { .. }) => {}
            Err(e) => panic!("image {i}: {e:?}"),
        }
        // Whatever was there, the device can save and restore again.
        let p = payload(700, i as u64);
        save(&mut s, &mut m, A, 5, &p).unwrap();
        let r = Store::new(cfg).restore(&mut m, A, &mut out).unwrap();
        assert!(
            matches!(r, Restore::Restored { len: 700, .. }),
            "image {i}: {r:?}"
        );
        assert_eq!(&out[..700], &p[..], "image {i}");
    }
    println!(
        "fuzz: 10,000 flash images, 0 panics; a record restored from {} random, \
         {} mutated, {} crafted",
        restored[0], restored[1], restored[2]
    );
}

/// Erases per 1,000 steps for a save every `k` steps of a 10,240-byte
/// payload, over 16,000 steps.
fn wear<const E: usize>(cfg: Config, k: u64) -> (f32, f32) {
    let size = (cfg.slot_size * cfg.slots) as usize;
    let mut f: Mock<1, 4, E> = Mock::new(size);
    let mut s = Store::new(cfg);
    let p = payload(10240, 3);
    let steps = 16_000;
    for step in 1..=steps {
        if step % k == 0 {
            save(&mut s, &mut f, A, step, &p).unwrap();
        }
    }
    let units = (size / E) as f32;
    let per = s.totals().erases_per_1000_steps(steps);
    assert_eq!(s.totals().erases as usize, f.erases);
    (per, per / units)
}

#[test]
fn store_wear_figures() {
    let rows: [(&str, f32, f32, f32); 4] = [
        ("16 KB sectors, 2 x 16 KB", 1.0, 1.0, 2.0),
        ("4 KB pages, 2 x 16 KB", 4.0, 1.0, 8.0),
        ("4 KB pages, 2 x 12 KB", 3.0, 1.0, 6.0),
        ("4 KB pages, 2 x 32 KB", 8.0, 3.0, 16.0),
    ];
    for (i, (name, units, recs, region)) in rows.into_iter().enumerate() {
        for k in [16u64, 64] {
            let (per, unit) = match i {
                0 => wear::<16384>(Config::new(0, 16384, 2), k),
                1 => wear::<4096>(Config::new(0, 16384, 2), k),
                2 => wear::<4096>(Config::new(0, 12288, 2), k),
                _ => wear::<4096>(Config::new(0, 32768, 2), k),
            };
            let expect = 1000.0 / k as f32 * units / recs;
            println!(
                "wear: {name}, save every {k} steps, 10 KB: {per:.1} erases per 1,000 steps, \
                 {unit:.1} per erase unit"
            );
            assert!(
                (per - expect).abs() / expect < 0.03,
                "{name} K={k}: {per} vs {expect}"
            );
            assert!((unit - expect / region).abs() / unit < 0.03);
        }
    }
}
