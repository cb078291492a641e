//! Power-fail-safe storage of what a device learned: parameters, optimizer
//! state, step counter and anything else the caller puts in the payload,
//! tagged with the identity of the factory model they belong to.
//!
//! **Why an own store, not `sequential-storage`.** `sequential-storage`
//! 8.0 (the current release) is async-only: every call is an `async fn` over
//! `embedded-storage-async` 0.4, so this blocking, single-threaded firmware
//! without an executor would need a hand-written `block_on` and an async
//! adapter around its HAL's blocking `NorFlash`. Its items must fit in one
//! flash page and in a `u16` length (a 10 KB record cannot be stored on the
//! 4 KB pages of an nRF52 at all), and an item is one contiguous RAM buffer,
//! so θ and the optimizer state would first be copied into a second buffer
//! as large as both. Its map (and popping its queue) needs
//! `MultiwriteNorFlash`, which flash with ECC words (STM32L4/G4/H7)
//! does not allow, and it needs Rust 1.87 where this crate supports 1.85.
//! Built for `thumbv7em-none-eabihf` at `opt-level = "s"` with LTO, its
//! queue (push plus a walk to the newest item, behind a `block_on`) takes
//! 6.6 KB of code against 3.3 KB for `save` and `restore` here (7.7 against
//! 4.8 KB with `memcpy` and `memset`). What this
//! workload needs is narrower than a key-value map or a FIFO: one record,
//! written now and then, read at boot. So this module is a small log of
//! records over the blocking [`NorFlash`] trait of `embedded-storage` 0.3
//! (the one HALs implement for internal flash), that writes each flash word
//! at most once between erases and streams the payload from the caller's
//! own slices.
//!
//! # Region and slots
//!
//! The store owns a region of `slots` × `slot_size` bytes at `offset` in
//! the flash ([`Config`]); a slot is a whole number of erase units, there are
//! at least two, and a record never spans two slots. Records are appended
//! in the slot that holds the newest record; when the next one does not fit
//! there (or that slot holds something unreadable) the next slot is erased
//! and the record is written at its start. The slot that holds the newest
//! complete record of the model being saved is never erased: if it is the
//! next one, the one after it is taken, so with two slots a save that
//! follows a torn save reuses the torn slot. Erase units of a slot are erased
//! first to last, one `erase` call each, and records are only appended to
//! the slot holding the newest record header, whose first header reads back
//! valid (an interrupted erase of it would have destroyed that header
//! first), after their area reads back erased.
//!
//! # Record layout
//!
//! All integers little-endian; `A` = max(`READ_SIZE`, `WRITE_SIZE`) of the
//! flash (a power of two, at most [`MAX_ALIGN`]); records start at multiples
//! of `A` from the slot start.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | magic `"FDS1"` |
//! | 4 | 4 | sequence number (wrapping; newer is `(a - b) as i32 > 0`) |
//! | 8 | 8 | model identity (e.g. [`model_id`] of the factory model) |
//! | 16 | 8 | training step |
//! | 24 | 4 | payload length `n` |
//! | 28 | 4 | CRC-32 of bytes 0..28 (the header) |
//! | 32 | `n` | payload, then `0xFF` up to a multiple of `A` |
//! | 32 + ⌈n⌉ | 4 | commit: CRC-32 of bytes 0..32 + `n` (header and payload) |
//! | 36 + ⌈n⌉ | 4 | commit magic `"DONE"`, then `0xFF` up to a multiple of `A` |
//!
//! A record is written front to back in program operations of at most
//! [`Config::chunk`] bytes (the header travels with the first bytes of the
//! payload), and the 8-byte commit is a separate, last program operation.
//! The commit is a trailer rather than a header CRC written last because a
//! header that is written first gives the record's length, so a save torn in
//! its payload leaves the rest of the slot usable, and because writing the
//! header last would program its words after the payload behind them, which
//! hides a torn save behind a blank header. A record counts only when its
//! header CRC, its commit CRC and the commit magic all check; a blank commit
//! word can never check, since the magic is not `0xFFFF_FFFF`. Before a
//! record is appended the store reads its area back as blank, and after the
//! commit it reads the whole record back: [`Store::save`] returns `Ok` only
//! for a record that [`Store::restore`] will find.
//!
//! # Power cuts
//!
//! A save only programs flash that reads as erased and only erases a slot
//! that does not hold the newest complete record of its model, so a cut at
//! any point leaves that record bit-for-bit intact; the save's own record is
//! either complete (then it is newer and is restored) or fails a check and
//! is skipped. The tests cut power after every single program and erase of
//! saves inside a slot and of saves that erase the next slot, also tearing
//! the interrupted operation after a prefix of its words, then 1,000 random
//! save sequences with random cuts, and restore 10,000 random or mutated
//! flash images without a panic.
//!
//! # Wear
//!
//! An erase unit is erased once per pass of the log over it, so the wear
//! of the region is the bytes of records written divided by its size. For a
//! 10,240-byte payload (10,280-byte record, `A` = 4) saved every `K` steps,
//! erases per 1,000 training steps (test `store_wear_figures`, 16,000 steps):
//!
//! | flash | region | erases, K = 16 | K = 64 | per unit, K = 16 | K = 64 |
//! |---|---|---|---|---|---|
//! | 16 KB sectors | 2 slots × 16 KB | 62.5 | 15.6 | 31.25 | 7.8 |
//! | 4 KB pages | 2 slots × 16 KB | 250 | 62.5 | 31.25 | 7.8 |
//! | 4 KB pages | 2 slots × 12 KB | 187.5 | 46.9 | 31.25 | 7.8 |
//! | 4 KB pages | 2 slots × 32 KB | 167 | 42 | 10.4 | 2.6 |
//!
//! The per-unit columns are what wear the flash out: with 10,000-cycle
//! flash, 31.25 erases of each unit per 1,000 steps last 320,000 steps, and
//! a larger region, or saving less often, lasts proportionally longer.
//! [`Store::totals`] counts erases and bytes written since the store was
//! made, for a firmware to report.
//!
//! # Integration
//!
//! * Buffers: the caller owns them all. [`Store::save`] streams `parts`
//!   (any lengths, any alignment) through a [`MAX_CHUNK`]-byte staging
//!   buffer; [`Store::restore`] needs an `out` at least as long as the
//!   payload. Stack: about 1 KB at most (measured frames on Cortex-M4: save
//!   0.9 KB, restore 0.8 KB); a [`Store`] is about 100 bytes.
//! * Alignment: the region's offset and slot size are multiples of
//!   `ERASE_SIZE`; a slot must hold [`record_len`]`(payload, A)` bytes, and
//!   holds `slot_size / record_len` records between erases.
//! * Work of one save, worst case: erasing one slot (`slot_size /
//!   ERASE_SIZE` erase calls; hundreds of milliseconds per 16 KB sector on
//!   an STM32F4), reading the record's area (blank check, when appending),
//!   programming the record in `⌈(32 + n) / chunk⌉ + 1` operations, and
//!   reading it back. [`SaveStats`] reports the erases, bytes and
//!   operations of each save.
//! * Boot: [`Store::restore`] reads every record in the region once (CRC of
//!   each) and the restored one twice; call it before the first save. A
//!   save without a restore reads the region first itself.
//! * Model identity: any `u64` that changes whenever the factory model
//!   does, e.g. [`model_id`] over the exported model's bytes.
//! * Flash drivers: the store believes `ERASE_SIZE`, `WRITE_SIZE` and
//!   `READ_SIZE`. A driver whose `ERASE_SIZE` is not the erase unit of the
//!   region (stm32f4xx-hal declares 128 KB for all sectors, though sectors
//!   0 to 3 are 16 KB) needs a thin wrapper that declares the region's
//!   unit. Flash programmed in units above [`MAX_ALIGN`] (the RP2040's
//!   256-byte pages) is wrapped with a smaller `WRITE_SIZE`, padding with
//!   `0xFF`, which leaves NOR flash as it is. A flash emulated for tests must clear
//!   bits only and deliver writes in pieces of at most `WRITE_SIZE`, so a
//!   cut can tear a record.
//!
//! ```
//! use fdgr_kernel::store::{Config, FactoryReason, Restore, Store};
//! # use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
//! # struct Ram([u8; 8192]);
//! # impl ErrorType for Ram { type Error = NorFlashErrorKind; }
//! # impl ReadNorFlash for Ram {
//! #     const READ_SIZE: usize = 1;
//! #     fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), Self::Error> {
//! #         b.copy_from_slice(&self.0[o as usize..][..b.len()]); Ok(())
//! #     }
//! #     fn capacity(&self) -> usize { self.0.len() }
//! # }
//! # impl NorFlash for Ram {
//! #     const WRITE_SIZE: usize = 4;
//! #     const ERASE_SIZE: usize = 1024;
//! #     fn erase(&mut self, f: u32, t: u32) -> Result<(), Self::Error> {
//! #         self.0[f as usize..t as usize].fill(0xFF); Ok(())
//! #     }
//! #     fn write(&mut self, o: u32, b: &[u8]) -> Result<(), Self::Error> {
//! #         for (d, s) in self.0[o as usize..].iter_mut().zip(b) { *d &= *s; } Ok(())
//! #     }
//! # }
//! # let mut flash = Ram([0xFF; 8192]);
//! let factory = [1u8, 2, 3, 4]; // the exported model, as shipped
//! let id = fdgr_kernel::store::model_id(&factory);
//! let mut store = Store::new(Config::new(0, 4096, 2));
//!
//! let theta = [0.5f32; 8];
//! let mut state = [0u8; 32 + 8];
//! match store.restore(&mut flash, id, &mut state).unwrap() {
//!     Restore::Factory(FactoryReason::Empty) => {} // first boot
//!     other => panic!("{other:?}"),
//! }
//! let bytes: [[u8; 4]; 8] = theta.map(f32::to_le_bytes);
//! let step = 100u64;
//! let stats = store
//!     .save(&mut flash, id, step, &[bytes.as_flattened(), &step.to_le_bytes()])
//!     .unwrap();
//! assert_eq!(stats.erased, 4); // the first save erases a slot
//!
//! let mut boot = Store::new(Config::new(0, 4096, 2));
//! let r = boot.restore(&mut flash, id, &mut state).unwrap();
//! assert_eq!(r, Restore::Restored { seq: stats.seq, step: 100, len: 40 });
//! assert_eq!(&state[..4], &0.5f32.to_le_bytes());
//! ```

use core::fmt;
use embedded_storage::nor_flash::NorFlash;

const MAGIC: u32 = u32::from_le_bytes(*b"FDS1");
const COMMIT: u32 = u32::from_le_bytes(*b"DONE");
const HEADER: u32 = 32;
const TRAILER: u32 = 8;

/// The largest `READ_SIZE` or `WRITE_SIZE` a flash may have.
pub const MAX_ALIGN: usize = 32;

/// The largest program operation the store issues, in bytes; a save keeps
/// a staging buffer of this size on the stack.
pub const MAX_CHUNK: usize = 256;

/// Where the store lives in the flash and how it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Start of the region, in bytes from the start of the flash; a
    /// multiple of `ERASE_SIZE`.
    pub offset: u32,
    /// Bytes per slot, a multiple of `ERASE_SIZE`; one record must fit.
    pub slot_size: u32,
    /// Number of slots, at least 2.
    pub slots: u32,
    /// Largest program operation in bytes: rounded down to a multiple of
    /// the flash's alignment, at most [`MAX_CHUNK`], at least one word.
    pub chunk: u32,
}

impl Config {
    /// A region of `slots` slots of `slot_size` bytes at `offset`, written
    /// in program operations of [`MAX_CHUNK`] bytes.
    pub const fn new(offset: u32, slot_size: u32, slots: u32) -> Self {
        Config {
            offset,
            slot_size,
            slots,
            chunk: MAX_CHUNK as u32,
        }
    }
}

/// What [`Store::restore`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Restore {
    /// The newest complete record of the model was copied to the start of
    /// the output buffer.
    Restored {
        /// Its sequence number.
        seq: u32,
        /// The training step saved with it.
        step: u64,
        /// Payload bytes copied.
        len: usize,
    },
    /// No complete record of the model: start from the factory weights.
    Factory(FactoryReason),
}

/// Why [`Store::restore`] fell back to the factory weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FactoryReason {
    /// Nothing was ever saved (the region reads as erased).
    Empty,
    /// Complete records exist, but only of other models.
    OtherModel,
    /// Something was written, but no record of the model is complete (a
    /// torn first save, or contents that are not records).
    Corrupt,
}

/// The cost of one [`Store::save`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SaveStats {
    /// Sequence number of the record.
    pub seq: u32,
    /// Where the record starts, in bytes from the start of the flash.
    pub address: u32,
    /// Bytes the record occupies.
    pub record_len: u32,
    /// Erase units (`ERASE_SIZE` bytes each) erased by this save.
    pub erased: u32,
    /// Bytes programmed.
    pub written: u32,
    /// Program operations issued.
    pub writes: u32,
}

/// Flash work done through one [`Store`] since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Totals {
    /// Saves that returned `Ok`.
    pub saves: u32,
    /// Erase units erased (failed saves included).
    pub erases: u32,
    /// Bytes programmed (failed saves included).
    pub written: u64,
}

impl Totals {
    /// Erases per 1,000 training steps over `steps` steps (0 for 0 steps).
    pub fn erases_per_1000_steps(&self, steps: u64) -> f32 {
        if steps == 0 {
            0.0
        } else {
            self.erases as f32 * 1000.0 / steps as f32
        }
    }
}

/// Why a store operation failed. A failed save leaves the newest complete
/// record as it was; the next call reads the region afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError<E> {
    /// The flash reported an error.
    Flash(E),
    /// The region or the flash's sizes cannot hold a store (the reason).
    Geometry(&'static str),
    /// The record (header, payload and commit) is larger than a slot.
    TooLarge {
        /// Bytes the record needs (saturated at `u32::MAX`).
        needed: u32,
        /// Bytes in a slot.
        slot: u32,
    },
    /// The output buffer is shorter than the payload of the record found.
    BufferTooSmall {
        /// Payload bytes.
        needed: u32,
    },
    /// What was written or found did not read back the same.
    Verify,
}

impl<E: fmt::Debug> fmt::Display for StoreError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Flash(e) => write!(f, "flash error: {e:?}"),
            StoreError::Geometry(why) => write!(f, "unusable store region: {why}"),
            StoreError::TooLarge { needed, slot } => {
                write!(
                    f,
                    "record of {needed} bytes does not fit a {slot}-byte slot"
                )
            }
            StoreError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: the payload has {needed} bytes")
            }
            StoreError::Verify => write!(f, "flash did not read back as written"),
        }
    }
}

/// A 64-bit identity of a model (FNV-1a over the exported factory model):
/// the one definition, [`crate::link::model_id`], which the link's status
/// reports too.
pub use crate::link::model_id;

/// Bytes a record with a payload of `payload_len` bytes occupies on a flash
/// whose alignment (max of `READ_SIZE` and `WRITE_SIZE`) is `align`, a
/// power of two; `None` if that overflows `u32`. A slot holds
/// `slot_size / record_len` records.
pub const fn record_len(payload_len: u32, align: u32) -> Option<u32> {
    let m = align.wrapping_sub(1);
    match payload_len.checked_add(HEADER) {
        Some(n) => match n.checked_add(m) {
            Some(n) => (n & !m).checked_add((TRAILER + m) & !m),
            None => None,
        },
        None => None,
    }
}

/// A power-fail-safe record store in a region of a [`NorFlash`].
///
/// It keeps what it learned about the region between calls (where to
/// append, which slot must not be erased); all flash access goes through
/// the flash handed to each call, which must be the same flash every time.
#[derive(Clone, Debug)]
pub struct Store {
    cfg: Config,
    scan: Option<Scan>,
    totals: Totals,
}

/// The region's geometry, checked against a flash.
#[derive(Clone, Copy)]
struct Geo {
    base: u32,
    slot: u32,
    slots: u32,
    align: u32,
    erase: u32,
    chunk: usize,
}

#[derive(Clone, Copy, Debug)]
struct Head {
    seq: u32,
    model: u64,
    step: u64,
    len: u32,
}

#[derive(Clone, Copy, Debug)]
struct Loc {
    slot: u32,
    off: u32,
    seq: u32,
    step: u64,
    len: u32,
}

#[derive(Clone, Copy, Debug)]
struct Scan {
    model: u64,
    next_seq: u32,
    /// The slot holding the record header with the newest sequence number,
    /// and where its free space starts (`None` when it ends in something
    /// unreadable).
    head: Option<(u32, Option<u32>)>,
    /// The newest complete record of `model`.
    newest: Option<Loc>,
    other: bool,
    ours_torn: bool,
    garbage: bool,
}

enum At {
    Blank,
    Bad,
    Rec(Head, bool, u32),
}

type Res<T, F> = Result<T, StoreError<<F as embedded_storage::nor_flash::ErrorType>::Error>>;

impl Store {
    /// A store for the region `cfg`; it reads nothing until the first call.
    pub const fn new(cfg: Config) -> Self {
        Store {
            cfg,
            scan: None,
            totals: Totals {
                saves: 0,
                erases: 0,
                written: 0,
            },
        }
    }

    /// The region.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Erases and bytes written since the store was made.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Reads the region and copies the payload of the newest complete record
    /// of `model_id` to the start of `out`; says so, or why the caller must
    /// start from the factory weights. Records of other models are ignored
    /// (and overwritten by later saves).
    pub fn restore<F: NorFlash>(
        &mut self,
        flash: &mut F,
        model_id: u64,
        out: &mut [u8],
    ) -> Res<Restore, F> {
        self.restore_parts(flash, model_id, &mut [out])
    }

    /// [`Store::restore`] into the concatenation of `parts` (the buffers
    /// a save took its parts from, restored in place: no staging buffer).
    pub fn restore_parts<F: NorFlash>(
        &mut self,
        flash: &mut F,
        model_id: u64,
        parts: &mut [&mut [u8]],
    ) -> Res<Restore, F> {
        let g = geo(&self.cfg, flash)?;
        self.scan = None;
        let sc = scan(flash, &g, model_id)?;
        self.scan = Some(sc);
        let Some(n) = sc.newest else {
            let why = if sc.ours_torn {
                FactoryReason::Corrupt
            } else if sc.other {
                FactoryReason::OtherModel
            } else if sc.garbage {
                FactoryReason::Corrupt
            } else {
                FactoryReason::Empty
            };
            return Ok(Restore::Factory(why));
        };
        let room = parts.iter().map(|p| p.len()).sum::<usize>();
        if room < n.len as usize {
            return Err(StoreError::BufferTooSmall { needed: n.len });
        }
        match at(flash, &g, n.slot, n.off, Some(parts))? {
            At::Rec(h, true, _) if h.seq == n.seq && h.len == n.len => Ok(Restore::Restored {
                seq: n.seq,
                step: n.step,
                len: n.len as usize,
            }),
            _ => {
                self.scan = None;
                Err(StoreError::Verify)
            }
        }
    }

    /// Saves the concatenation of `parts` as the newest record of
    /// `model_id` at training step `step`, returning once it reads back
    /// complete. A power cut at any point leaves either this record or the
    /// previous newest one to be restored, each bit for bit.
    pub fn save<F: NorFlash>(
        &mut self,
        flash: &mut F,
        model_id: u64,
        step: u64,
        parts: &[&[u8]],
    ) -> Res<SaveStats, F> {
        let g = geo(&self.cfg, flash)?;
        let len = parts
            .iter()
            .try_fold(0u32, |a, p| a.checked_add(u32::try_from(p.len()).ok()?));
        let rl = len.and_then(|n| record_len(n, g.align));
        let (len, rl) = match (len, rl) {
            (Some(n), Some(r)) if r <= g.slot => (n, r),
            _ => {
                return Err(StoreError::TooLarge {
                    needed: rl.unwrap_or(u32::MAX),
                    slot: g.slot,
                })
            }
        };
        let mut sc = match self.scan.take() {
            Some(s) if s.model == model_id => s,
            _ => scan(flash, &g, model_id)?,
        };
        let mut st = SaveStats {
            seq: sc.next_seq,
            record_len: rl,
            ..SaveStats::default()
        };

        let mut target = None;
        if let Some((h, Some(p))) = sc.head {
            if p.checked_add(rl).is_some_and(|e| e <= g.slot) && blank(flash, &g, g.addr(h, p), rl)?
            {
                target = Some((h, p));
            }
        }
        let (slot, off) = match target {
            Some(t) => t,
            None => {
                let mut t = sc.head.map_or(0, |(h, _)| (h + 1) % g.slots);
                if sc.newest.is_some_and(|n| n.slot == t) {
                    t = (t + 1) % g.slots;
                }
                let mut a = g.addr(t, 0);
                for _ in 0..g.slot / g.erase {
                    let r = flash.erase(a, a + g.erase);
                    r.map_err(StoreError::Flash)?;
                    self.totals.erases += 1;
                    st.erased += 1;
                    a += g.erase;
                }
                (t, 0)
            }
        };
        st.address = g.addr(slot, off);

        let mut h = [0xFFu8; HEADER as usize];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&st.seq.to_le_bytes());
        h[8..16].copy_from_slice(&model_id.to_le_bytes());
        h[16..24].copy_from_slice(&step.to_le_bytes());
        h[24..28].copy_from_slice(&len.to_le_bytes());
        let hc = crc32(&h[..28]);
        h[28..32].copy_from_slice(&hc.to_le_bytes());

        let mut w = Stage {
            flash,
            addr: st.address,
            buf: [0xFF; MAX_CHUNK],
            fill: 0,
            chunk: g.chunk,
            align: g.align as usize,
            crc: !0,
            st: &mut st,
            totals: &mut self.totals,
        };
        w.push(&h)?;
        for p in parts {
            w.push(p)?;
        }
        w.flush()?;
        let crc = !w.crc;
        let mut t = [0xFFu8; MAX_ALIGN];
        t[0..4].copy_from_slice(&crc.to_le_bytes());
        t[4..8].copy_from_slice(&COMMIT.to_le_bytes());
        w.buf[..MAX_ALIGN].copy_from_slice(&t);
        w.fill = TRAILER as usize;
        w.flush()?;

        match at(flash, &g, slot, off, None)? {
            At::Rec(h, true, r) if h.seq == st.seq && r == rl => {}
            _ => return Err(StoreError::Verify),
        }
        self.totals.saves += 1;
        sc.next_seq = st.seq.wrapping_add(1);
        sc.head = Some((slot, Some(off + rl)));
        sc.newest = Some(Loc {
            slot,
            off,
            seq: st.seq,
            step,
            len,
        });
        self.scan = Some(sc);
        Ok(st)
    }
}

impl Geo {
    fn addr(&self, slot: u32, off: u32) -> u32 {
        self.base + slot * self.slot + off
    }
}

fn geo<F: NorFlash>(cfg: &Config, flash: &F) -> Res<Geo, F> {
    let align = F::READ_SIZE.max(F::WRITE_SIZE);
    if !align.is_power_of_two() || align > MAX_ALIGN {
        return Err(StoreError::Geometry(
            "READ_SIZE or WRITE_SIZE above 32 bytes",
        ));
    }
    let erase = u32::try_from(F::ERASE_SIZE)
        .ok()
        .filter(|&e| e > 0 && e as usize % align == 0)
        .ok_or(StoreError::Geometry(
            "ERASE_SIZE not a multiple of WRITE_SIZE",
        ))?;
    if cfg.slots < 2 {
        return Err(StoreError::Geometry("fewer than 2 slots"));
    }
    if cfg.slot_size == 0 || cfg.slot_size % erase != 0 || cfg.offset % erase != 0 {
        return Err(StoreError::Geometry(
            "offset or slot size not a multiple of ERASE_SIZE",
        ));
    }
    let end = cfg
        .slot_size
        .checked_mul(cfg.slots)
        .and_then(|n| n.checked_add(cfg.offset));
    if end.is_none_or(|e| e as usize > flash.capacity()) {
        return Err(StoreError::Geometry("region beyond the end of the flash"));
    }
    let chunk = (cfg.chunk as usize).min(MAX_CHUNK) & !(align - 1);
    Ok(Geo {
        base: cfg.offset,
        slot: cfg.slot_size,
        slots: cfg.slots,
        align: align as u32,
        erase,
        chunk: chunk.max(align),
    })
}

/// Buffers a record into program operations of `chunk` bytes.
struct Stage<'a, F> {
    flash: &'a mut F,
    addr: u32,
    buf: [u8; MAX_CHUNK],
    fill: usize,
    chunk: usize,
    align: usize,
    crc: u32,
    st: &'a mut SaveStats,
    totals: &'a mut Totals,
}

impl<F: NorFlash> Stage<'_, F> {
    fn push(&mut self, mut data: &[u8]) -> Res<(), F> {
        self.crc = crc_update(self.crc, data);
        while !data.is_empty() {
            let n = (self.chunk - self.fill).min(data.len());
            let (a, b) = data.split_at(n);
            self.buf[self.fill..self.fill + n].copy_from_slice(a);
            self.fill += n;
            data = b;
            if self.fill == self.chunk {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Res<(), F> {
        if self.fill == 0 {
            return Ok(());
        }
        let n = (self.fill + self.align - 1) & !(self.align - 1);
        self.buf[self.fill..n].fill(0xFF);
        let r = self.flash.write(self.addr, &self.buf[..n]);
        r.map_err(StoreError::Flash)?;
        self.addr += n as u32;
        self.fill = 0;
        self.st.writes += 1;
        self.st.written += n as u32;
        self.totals.written += n as u64;
        Ok(())
    }
}

/// `a` is newer than `b` in wrapping sequence order.
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn scan<F: NorFlash>(flash: &mut F, g: &Geo, model: u64) -> Res<Scan, F> {
    let mut sc = Scan {
        model,
        next_seq: 0,
        head: None,
        newest: None,
        other: false,
        ours_torn: false,
        garbage: false,
    };
    let mut top: Option<u32> = None;
    for s in 0..g.slots {
        let mut p = 0;
        let mut moved = false;
        let free = loop {
            match at(flash, g, s, p, None)? {
                At::Blank => break Some(p),
                At::Bad => {
                    sc.garbage = true;
                    break None;
                }
                At::Rec(h, ok, rl) => {
                    if top.is_none_or(|t| newer(h.seq, t)) {
                        top = Some(h.seq);
                        moved = true;
                    }
                    if !ok {
                        sc.garbage = true;
                        sc.ours_torn |= h.model == model;
                    } else if h.model != model {
                        sc.other = true;
                    } else if sc.newest.is_none_or(|n| newer(h.seq, n.seq)) {
                        sc.newest = Some(Loc {
                            slot: s,
                            off: p,
                            seq: h.seq,
                            step: h.step,
                            len: h.len,
                        });
                    }
                    p += rl;
                }
            }
        };
        if moved {
            sc.head = Some((s, free));
        }
    }
    sc.next_seq = top.map_or(0, |t| t.wrapping_add(1));
    Ok(sc)
}

/// Reads what is at offset `p` of slot `s`: nothing, something unreadable,
/// or a record with a readable header (complete or not) and its length.
/// With `out` (exactly the payload's length), copies the payload there.
fn at<F: NorFlash>(
    flash: &mut F,
    g: &Geo,
    s: u32,
    p: u32,
    mut out: Option<&mut [&mut [u8]]>,
) -> Res<At, F> {
    if g.slot - p < HEADER {
        return Ok(At::Blank);
    }
    let mut a = g.addr(s, p);
    let mut hb = [0u8; HEADER as usize];
    flash.read(a, &mut hb).map_err(StoreError::Flash)?;
    if hb.iter().all(|&b| b == 0xFF) {
        return Ok(At::Blank);
    }
    let h = Head {
        seq: le32(&hb, 4),
        model: le32(&hb, 8) as u64 | (le32(&hb, 12) as u64) << 32,
        step: le32(&hb, 16) as u64 | (le32(&hb, 20) as u64) << 32,
        len: le32(&hb, 24),
    };
    let rl = match record_len(h.len, g.align) {
        Some(r) if le32(&hb, 0) == MAGIC && le32(&hb, 28) == crc32(&hb[..28]) => r,
        _ => return Ok(At::Bad),
    };
    if rl > g.slot - p {
        return Ok(At::Bad);
    }
    let mut crc = crc_update(!0, &hb);
    let mut buf = [0u8; MAX_CHUNK];
    let mut done = 0usize;
    let len = h.len as usize;
    a += HEADER;
    while done < len {
        let n = (len - done).min(MAX_CHUNK);
        let rn = (n + g.align as usize - 1) & !(g.align as usize - 1);
        flash.read(a, &mut buf[..rn]).map_err(StoreError::Flash)?;
        crc = crc_update(crc, &buf[..n]);
        if let Some(parts) = out.as_deref_mut() {
            scatter(parts, done, &buf[..n]);
        }
        a += rn as u32;
        done += n;
    }
    let tl = (TRAILER as usize).max(g.align as usize);
    flash.read(a, &mut buf[..tl]).map_err(StoreError::Flash)?;
    let ok = le32(&buf, 0) == !crc && le32(&buf, 4) == COMMIT;
    Ok(At::Rec(h, ok, rl))
}

/// Copies `bytes` to offset `at` of the concatenation of `parts` (what
/// does not fit is dropped).
fn scatter(parts: &mut [&mut [u8]], mut at: usize, mut bytes: &[u8]) {
    for p in parts.iter_mut() {
        if bytes.is_empty() {
            return;
        }
        if at >= p.len() {
            at -= p.len();
            continue;
        }
        let n = (p.len() - at).min(bytes.len());
        p[at..at + n].copy_from_slice(&bytes[..n]);
        bytes = &bytes[n..];
        at = 0;
    }
}

/// Whether `len` bytes at `a` all read as erased.
fn blank<F: NorFlash>(flash: &mut F, g: &Geo, mut a: u32, len: u32) -> Res<bool, F> {
    let mut buf = [0u8; MAX_CHUNK];
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(MAX_CHUNK);
        let rn = (n + g.align as usize - 1) & !(g.align as usize - 1);
        flash.read(a, &mut buf[..rn]).map_err(StoreError::Flash)?;
        if buf[..n].iter().any(|&b| b != 0xFF) {
            return Ok(false);
        }
        a += rn as u32;
        left -= n;
    }
    Ok(true)
}

fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

use crate::crc::{crc32, update as crc_update};

#[cfg(test)]
mod tests;
