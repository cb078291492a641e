//! The live image (feature `live`): the device learns from samples that
//! arrive while it runs and keeps what it learned through resets and power
//! cuts.
//!
//! ```text
//! boot ─► restore the newest complete record of this model ─┬─► factory weights (none, other model, torn)
//!                                                           ▼
//!   ┌─── frame from the link (fdgr_kernel::link) ◄──────────────────┐
//!   │  CRC, length, type, shape, finite x, label < classes          │
//!   │  bad ─► NACK(reason): never reaches the model                 │
//!   ├─ Learn(x, y)  ─► predict (prequential), step, Ack(class, loss)│
//!   │                  every SAVE_EVERY steps: save ────────────────┤
//!   ├─ Predict(x)   ─► Prediction(class, scores)                    │
//!   ├─ Status / Save / Pull / FactoryReset                          │
//!   └───────────────────────────────────────────────────────────────┘
//! ```
//!
//! The state saved (`fdgr_kernel::store`, power-fail-safe) is: a meta
//! block (samples learned, optimizer steps, last loss), the trained
//! parameters, and the optimizer's state vectors, under the identity of
//! the factory model and the mode ([`crate::generated::STORE_ID`]), so a
//! different model, or the same one trained in another mode, flashed
//! later never loads it.

use embedded_storage::nor_flash::NorFlash;
use fdgr_kernel::link::{self, Command, Decoder, Frame, LinkModel, Nack, Reason, Replay, Reply};
use fdgr_kernel::store::{self, Restore, Store};

use crate::config::BATCH;
use crate::generated::{INPUTS, PIXEL_MAX};
use crate::generated::{MODEL_ID, SAVE_EVERY, STORE_ID};
use crate::{fdgr_mark, Board, Buffers, Failure, FROZEN, MODELS, P, PLANNED, TP};

/// A byte transport to the host: a UART, an RTT channel.
pub trait Link {
    /// The next byte from the host (waits for it).
    fn read_byte(&mut self) -> u8;
    /// Sends `bytes` to the host.
    fn write(&mut self, bytes: &[u8]);
}

/// Outputs (classes) of the model.
const K: usize = PLANNED.outputs;
/// The largest request the device accepts: a learn frame of f32 inputs.
const IN_FRAME: usize = link::frame_len(3 + 4 * INPUTS);
/// Weights per Pull reply.
const PULL_CHUNK: usize = 240;
/// The largest reply: weights or a prediction.
const OUT_FRAME: usize = {
    let w = link::frame_len(8 + 4 * PULL_CHUNK);
    let p = link::frame_len(2 + 4 * K);
    if w > p {
        w
    } else {
        p
    }
};
const META: usize = 24;

/// Counters kept with the weights.
struct Counters {
    /// Samples learned since the factory model.
    seen: u64,
    /// Saves since boot.
    saves: u32,
    /// Loss of the last step.
    last_loss: f32,
    /// The stack painted at boot, for its peak.
    painted: crate::stack::Painted,
}

fn bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every bit pattern is a valid u8; the
    // length covers exactly the values.
    unsafe { core::slice::from_raw_parts(v.as_ptr().cast(), core::mem::size_of_val(v)) }
}

fn bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as in `bytes`; every bit pattern is a valid f32.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), core::mem::size_of_val(v)) }
}

/// The factory model: θ from flash, optimizer state zero, no steps.
fn factory(m: &mut Buffers, c: &mut Counters) {
    // the lengths are the planned ones, so this cannot fail
    if let Err(e) = crate::MODELS.gather(&FROZEN[..], &mut m.theta[..]) {
        defmt::error!("factory weights: {}", e);
    }
    m.s0.fill(0.0);
    m.s1.fill(0.0);
    m.tuner.learner.state.steps = 0;
    m.tuner.ring = fdgr_kernel::ring::SampleRing::new();
    c.seen = 0;
    c.last_loss = f32::NAN;
}

fn meta(m: &Buffers, c: &Counters) -> [u8; META] {
    let mut b = [0u8; META];
    b[..8].copy_from_slice(&c.seen.to_le_bytes());
    b[8..16].copy_from_slice(&m.tuner.learner.state.steps.to_le_bytes());
    b[16..20].copy_from_slice(&c.last_loss.to_bits().to_le_bytes());
    b
}

fn save<F: NorFlash>(
    flash: &mut F,
    st: &mut Store,
    m: &Buffers,
    c: &mut Counters,
) -> Result<(), ()> {
    let head = meta(m, c);
    fdgr_mark();
    let r = st.save(
        flash,
        STORE_ID,
        c.seen,
        &[
            &head,
            bytes(&m.theta[..]),
            bytes(&m.s0[..]),
            bytes(&m.s1[..]),
        ],
    );
    fdgr_mark();
    match r {
        Ok(s) => {
            c.saves += 1;
            let t = st.totals();
            defmt::info!(
                "saved step {=u64}: record {=u32} bytes at {=u32}, {=u32} erased now, {=u32} erases in all",
                c.seen,
                s.record_len,
                s.address,
                s.erased,
                t.erases
            );
            Ok(())
        }
        Err(e) => {
            defmt::error!(
                "save at step {=u64} failed: {}",
                c.seen,
                defmt::Display2Format(&e)
            );
            Err(())
        }
    }
}

/// Restores the newest saved state of this model, or keeps the factory
/// weights and says why.
fn restore<F: NorFlash>(flash: &mut F, st: &mut Store, m: &mut Buffers, c: &mut Counters) {
    let mut head = [0u8; META];
    let r = st.restore_parts(
        flash,
        STORE_ID,
        &mut [
            &mut head,
            bytes_mut(&mut m.theta[..]),
            bytes_mut(&mut m.s0[..]),
            bytes_mut(&mut m.s1[..]),
        ],
    );
    let want = META + 4 * (TP + 2 * m.s0.len());
    match r {
        Ok(Restore::Restored { seq, step, len }) if len == want => {
            let u = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&head[i..i + 8]);
                u64::from_le_bytes(b)
            };
            c.seen = u(0);
            m.tuner.learner.state.steps = u(8);
            let mut lb = [0u8; 4];
            lb.copy_from_slice(&head[16..20]);
            c.last_loss = f32::from_bits(u32::from_le_bytes(lb));
            defmt::info!(
                "restored step {=u64} (record {=u32}, saved at step {=u64})",
                c.seen,
                seq,
                step
            );
        }
        Ok(Restore::Restored { len, .. }) => {
            factory(m, c);
            defmt::warn!(
                "factory weights: the saved state has {=usize} bytes, this image keeps {=usize}",
                len,
                want
            );
        }
        Ok(Restore::Factory(why)) => {
            factory(m, c);
            let why = match why {
                store::FactoryReason::Empty => "nothing saved",
                store::FactoryReason::OtherModel => "the saved state is another model's",
                store::FactoryReason::Corrupt => "no complete record",
            };
            defmt::info!("factory weights: {=str}", why);
        }
        Err(e) => {
            factory(m, c);
            defmt::error!(
                "factory weights: restore failed: {}",
                defmt::Display2Format(&e)
            );
        }
    }
}

/// The arg max of `scores` (the first of equal ones).
fn argmax(scores: &[f32]) -> u16 {
    fdgr_kernel::loss::argmax(scores) as u16
}

/// The model's scores on the sample in `m.x` (already scaled).
fn predict(m: &mut Buffers, scores: &mut [f32; K]) -> Result<u16, fdgr_kernel::Error> {
    fdgr_kernel::finetune::outputs_planned(
        &MODELS,
        Some(&FROZEN[..]),
        &m.theta[..],
        &m.x[..INPUTS],
        &mut m.ws[..],
        &mut m.feats[..],
        scores,
    )?;
    Ok(argmax(scores))
}

struct Out<'l, L> {
    link: &'l mut L,
    buf: [u8; OUT_FRAME],
}

impl<L: Link> Out<'_, L> {
    fn send(&mut self, seq: u16, r: &Reply<'_>) {
        match r.encode(seq, &mut self.buf) {
            Ok(n) => self.link.write(&self.buf[..n]),
            Err(_) => defmt::error!("reply to {=u16} does not fit its buffer", seq),
        }
    }
    fn nack(&mut self, seq: u16, n: Nack) {
        self.send(seq, &Reply::Nack(n));
    }
}

/// Runs the live loop forever (it ends when the power does).
pub fn run_live<B: Board, L: Link, F: NorFlash>(
    board: &mut B,
    link: &mut L,
    flash: &mut F,
) -> Result<(), Failure> {
    let _ = board;
    let Some(mut m) = Buffers::take() else {
        defmt::error!("buffers already taken");
        return Err(Failure::Busy);
    };
    const _: () = assert!(BATCH == 1);
    let region = flash.capacity() / 2 / F::ERASE_SIZE * F::ERASE_SIZE;
    let mut st = Store::new(store::Config::new(0, region as u32, 2));
    let mut c = Counters {
        seen: 0,
        saves: 0,
        last_loss: f32::NAN,
        painted: crate::stack::paint(),
    };
    defmt::info!(
        "fdgr live on {=str}: model {=u64:#018x}, P={=usize}, trained {=usize}, method {=str}, mode {=str}, save every {=u64} steps, flash {=usize} bytes in 2 slots",
        board.name(),
        MODEL_ID,
        P,
        TP,
        crate::METHOD.name(),
        crate::MODE_NAME,
        SAVE_EVERY,
        2 * region
    );
    restore(flash, &mut st, &mut m, &mut c);
    // the instruction-count plugin's calibration: two marks back to back
    // (then a pair around every step and every save)
    fdgr_mark();
    fdgr_mark();
    let model = LinkModel::new(INPUTS, K, P);
    let mut dec: Decoder<IN_FRAME> = Decoder::new();
    let mut live = Live {
        m,
        c,
        st,
        flash,
        out: Out {
            link,
            buf: [0; OUT_FRAME],
        },
        replay: Replay::new(),
        scores: [0.0f32; K],
    };
    defmt::info!("fdgr ready at step {=u64}", live.c.seen);
    loop {
        let b = live.out.link.read_byte();
        let frame: Frame<'_> = match dec.push(b) {
            None => continue,
            Some(Err(e)) => {
                if let Some((seq, n)) = e.nack() {
                    live.out.nack(seq, n);
                }
                continue;
            }
            Some(Ok(f)) => f,
        };
        let seq = frame.seq;
        if let Some(r) = live.replay.check(&frame) {
            live.out.send(seq, &r);
            continue;
        }
        match link::parse_request(&frame, &model) {
            Ok(cmd) => live.serve(seq, &frame, cmd),
            Err(n) => live.out.nack(seq, n),
        }
    }
}

/// What the live loop keeps between frames.
struct Live<'a, L, F> {
    m: Buffers,
    c: Counters,
    st: Store,
    flash: &'a mut F,
    out: Out<'a, L>,
    replay: Replay,
    scores: [f32; K],
}

impl<L: Link, F: NorFlash> Live<'_, L, F> {
    /// Answers one checked request (frame `seq`).
    fn serve(&mut self, seq: u16, frame: &Frame<'_>, cmd: Command<'_>) {
        match cmd {
            Command::Learn(s) => self.learn(seq, frame, s),
            Command::Predict(q) => {
                q.fill(PIXEL_MAX, &mut self.m.x[..INPUTS]);
                match predict(&mut self.m, &mut self.scores) {
                    Ok(class) => self.out.send(
                        seq,
                        &Reply::Prediction {
                            class,
                            scores: (&self.scores[..]).into(),
                        },
                    ),
                    Err(_) => self.out.nack(seq, Nack::new(Reason::Failed, 0)),
                }
            }
            Command::Status => {
                let s = status(&self.c);
                self.out.send(seq, &Reply::Status(s));
            }
            Command::Save => {
                if self.saved(seq) {
                    self.out.send(seq, &Reply::Status(status(&self.c)));
                }
            }
            Command::FactoryReset => {
                factory(&mut self.m, &mut self.c);
                // a record of the factory state, so a reset survives a
                // power cut like any learned state
                if self.saved(seq) {
                    defmt::info!("factory reset");
                    self.out.send(seq, &Reply::Status(status(&self.c)));
                }
            }
            Command::Pull { offset, count } => self.pull(seq, offset, count),
        }
    }

    /// Predicts the sample's class (prequential), then learns from it.
    fn learn(&mut self, seq: u16, frame: &Frame<'_>, s: link::Sample<'_>) {
        let Some(sample) = s.to_ring::<INPUTS>() else {
            // the fine-tuner learns from pixels (u8), as the host trained
            // on them
            self.out.nack(seq, Nack::new(Reason::Encoding, 1));
            return;
        };
        s.x().fill(PIXEL_MAX, &mut self.m.x[..INPUTS]);
        let Ok(class) = predict(&mut self.m, &mut self.scores) else {
            self.out.nack(seq, Nack::new(Reason::Failed, 0));
            return;
        };
        fdgr_mark();
        let r = self.m.step(sample);
        fdgr_mark();
        let loss = match r {
            Ok(l) => l,
            Err(e) => {
                defmt::error!("step {=u64}: {}", self.c.seen, e);
                self.out.nack(seq, Nack::new(Reason::Failed, 1));
                return;
            }
        };
        let c = &mut self.c;
        c.seen += 1;
        c.last_loss = loss;
        self.replay.record(frame, class, loss);
        self.out.send(seq, &Reply::Ack { class, loss });
        if c.seen % SAVE_EVERY == 0 {
            let _ = save(self.flash, &mut self.st, &self.m, c);
        }
    }

    /// Saves the state; on failure NACKs request `seq` and returns false.
    fn saved(&mut self, seq: u16) -> bool {
        let ok = save(self.flash, &mut self.st, &self.m, &mut self.c).is_ok();
        if !ok {
            self.out.nack(seq, Nack::new(Reason::Failed, 2));
        }
        ok
    }

    /// Sends weights `offset..offset + count` (at most [`PULL_CHUNK`]) of
    /// the whole model.
    fn pull(&mut self, seq: u16, offset: usize, count: usize) {
        let n = count.min(PULL_CHUNK);
        let mut vals = [0.0f32; PULL_CHUNK];
        for (j, v) in vals.iter_mut().take(n).enumerate() {
            let i = offset + j;
            *v = crate::MODELS.whole_param(&self.m.theta[..], &FROZEN[..], i);
        }
        self.out.send(
            seq,
            &Reply::Weights {
                offset: offset as u32,
                total: P as u32,
                values: (&vals[..n]).into(),
            },
        );
    }
}

fn status(c: &Counters) -> link::Status {
    link::Status {
        version: link::VERSION,
        capacity: IN_FRAME.saturating_sub(link::OVERHEAD) as u16,
        inputs: INPUTS as u32,
        classes: K as u32,
        params: P as u32,
        model_id: MODEL_ID,
        step: c.seen,
        seen: c.seen,
        saves: c.saves,
        last_loss: c.last_loss,
        // 0: the peak left the painted window (unknown)
        stack_peak: crate::stack::peak(&c.painted).map_or(0, |b| b as u32),
    }
}
