//! Fuzzing: 500,000 random and mutated frames through a decoder and the
//! checks.

use super::*;

const FUZZ_FRAMES: usize = 500_000;

#[derive(Default, Debug)]
struct Stats {
    frames: usize,
    bytes: usize,
    decoded: usize,
    header: usize,
    length: usize,
    crc: usize,
    accepted: [usize; 5],
    rejected: [usize; 13],
    replies: usize,
    panics: usize,
}

fn random_input<'a>(
    rng: &mut Rng,
    n: usize,
    bytes: &'a mut Vec<u8>,
    floats: &'a mut Vec<f32>,
) -> Input<'a> {
    if rng.below(2) == 0 {
        *bytes = (0..n).map(|_| rng.below(256) as u8).collect();
        Input::U8(bytes)
    } else {
        *floats = (0..n).map(|_| rng.normal() as f32).collect();
        Input::F32(F32s::from(&floats[..]))
    }
}

/// A random valid request (Learn half the time).
fn valid_request(rng: &mut Rng, m: &LinkModel) -> Vec<u8> {
    let (mut b, mut f) = (Vec::new(), Vec::new());
    let seq = rng.below(65536) as u16;
    let r = match rng.below(10) {
        0..=4 => Request::Learn {
            x: random_input(rng, m.inputs, &mut b, &mut f),
            label: rng.below(m.classes) as u16,
        },
        5 | 6 => Request::Predict {
            x: random_input(rng, m.inputs, &mut b, &mut f),
        },
        7 => Request::Pull {
            offset: rng.below(m.params + 1) as u32,
            count: rng.below(2000) as u16,
        },
        8 => Request::Status,
        _ => Request::FactoryReset,
    };
    req(&r, seq)
}

fn valid_reply(rng: &mut Rng) -> Vec<u8> {
    let v: Vec<f32> = (0..rng.below(40)).map(|_| rng.normal() as f32).collect();
    let r = match rng.below(5) {
        0 => Reply::Ack {
            class: rng.below(10) as u16,
            loss: rng.uniform() as f32,
        },
        1 => Reply::Nack(Nack::new(
            Reason::from_code(1 + rng.below(12) as u8).unwrap(),
            rng.next_u64() as u32,
        )),
        2 => Reply::Prediction {
            class: 1,
            scores: F32s::from(&v[..]),
        },
        3 => Reply::Status(Status {
            version: VERSION,
            capacity: 4096,
            inputs: 16,
            classes: 10,
            params: 300,
            model_id: rng.next_u64(),
            step: rng.next_u64(),
            seen: rng.next_u64(),
            saves: 0,
            last_loss: f32::NAN,
            stack_peak: 0,
        }),
        _ => Reply::Weights {
            offset: 0,
            total: 300,
            values: F32s::from(&v[..]),
        },
    };
    rep(&r, rng.below(65536) as u16)
}

/// A request whose framing is valid and whose content is not: learn or
/// predict with non-finite or huge values, labels out of range, wrong
/// shape, unknown encoding; pulls past the last weight.
fn poisoned_request(rng: &mut Rng, m: &LinkModel) -> Vec<u8> {
    if rng.below(8) == 0 {
        let offset = (m.params + 1 + rng.below(1 << 20)) as u32;
        let offset = if rng.below(4) == 0 {
            u32::MAX - rng.below(4) as u32
        } else {
            offset
        };
        let count = rng.below(65536) as u16;
        return req(&Request::Pull { offset, count }, rng.below(65536) as u16);
    }
    let mut kind = if rng.below(3) == 0 {
        Kind::Predict
    } else {
        Kind::Learn
    };
    let mut n = m.inputs;
    let mut tag = 1u8;
    let mut label = rng.below(m.classes) as u16;
    let mut x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    match rng.below(6) {
        0 | 1 => {
            let bad = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                -f32::NAN,
                f32::from_bits(0x7F80_0001),
            ];
            x[rng.below(n)] = bad[rng.below(bad.len())];
        }
        2 => {
            let huge = (m.limit as f64 * (1.001 + 1e3 * rng.uniform())).min(3.0e38) as f32;
            x[rng.below(n)] = if rng.below(2) == 0 { huge } else { -huge };
            if rng.below(4) == 0 {
                x[rng.below(n)] = f32::MAX;
            }
        }
        3 => {
            kind = Kind::Learn;
            label = (m.classes + rng.below(65536 - m.classes)) as u16;
        }
        4 => {
            while n == m.inputs {
                n = rng.below(3 * m.inputs);
            }
            tag = rng.below(2) as u8;
            x = vec![0.5; n];
        }
        _ => tag = 2 + rng.below(254) as u8,
    }
    let mut p = vec![tag];
    if kind == Kind::Learn {
        p.extend_from_slice(&label.to_le_bytes());
    }
    for v in &x {
        if tag == 0 {
            p.push(*v as u8);
        } else {
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
    if tag == 1 && rng.below(8) == 0 {
        p.push(0); // a stray byte: a length error
    }
    p.truncate(MAX_PAYLOAD);
    raw(kind as u8, rng.below(65536) as u16, &p)
}

fn mutated_frame(rng: &mut Rng, m: &LinkModel) -> Vec<u8> {
    let mut f = if rng.below(4) == 0 {
        valid_reply(rng)
    } else {
        valid_request(rng, m)
    };
    match rng.below(8) {
        // Bit flips.
        0 | 1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
        }
        // Truncation.
        2 => f.truncate(rng.below(f.len())),
        // Insertion, sometimes of magic bytes.
        3 => {
            for _ in 0..1 + rng.below(16) {
                let b = match rng.below(3) {
                    0 => MAGIC[0],
                    1 => MAGIC[1],
                    _ => rng.below(256) as u8,
                };
                f.insert(rng.below(f.len() + 1), b);
            }
        }
        // Deletion.
        4 => {
            for _ in 0..1 + rng.below(4) {
                if !f.is_empty() {
                    f.remove(rng.below(f.len()));
                }
            }
        }
        // The length field, with a header check that passes most times
        // (so lengths over the limit and mismatched lengths are seen).
        5 => {
            let len = match rng.below(4) {
                0 => rng.below(65536) as u16,
                1 => (MAX_PAYLOAD + 1 + rng.below(65536 - MAX_PAYLOAD - 1)) as u16,
                2 => rng.below(MAX_PAYLOAD + 1) as u16,
                _ => {
                    let l = u16::from_le_bytes([f[5], f[6]]);
                    l.wrapping_add(rng.below(9) as u16).wrapping_sub(4)
                }
            };
            f[5..7].copy_from_slice(&len.to_le_bytes());
            if rng.below(4) != 0 {
                fix_header(&mut f);
            }
        }
        // Another type, re-checksummed.
        6 => {
            f[2] = rng.below(256) as u8;
            fix_header(&mut f);
            fix_crc(&mut f);
        }
        // A random payload under a valid frame of a random type.
        _ => {
            let kind = [1u8, 2, 3, 4, 5, 0x80, 0x81, 0x82, 0x83, 0x84, 0, 0xFF][rng.below(12)];
            let p: Vec<u8> = (0..rng.below(80)).map(|_| rng.below(256) as u8).collect();
            f = raw(kind, rng.below(65536) as u16, &p);
        }
    }
    f
}

fn garbage(rng: &mut Rng) -> Vec<u8> {
    (0..rng.below(128))
        .map(|_| match rng.below(16) {
            0 => MAGIC[0],
            1 => MAGIC[1],
            _ => rng.below(256) as u8,
        })
        .collect()
}

fn check_frame(f: &Frame<'_>, m: &LinkModel, st: &mut Stats) {
    st.decoded += 1;
    if parse_reply(f).is_ok() {
        st.replies += 1;
    }
    match parse_request(f, m) {
        Err(n) => st.rejected[n.reason.code() as usize] += 1,
        Ok(c) => {
            let k = match c {
                Command::Learn(s) => {
                    assert!(usize::from(s.label()) < m.classes);
                    check_query(&s.x(), m);
                    assert_eq!(parse_learn(f, m), Ok(s));
                    0
                }
                Command::Predict(q) => {
                    check_query(&q, m);
                    1
                }
                Command::Status => 2,
                Command::Pull { offset, count } => {
                    assert!(offset + count <= m.params && count <= MAX_WEIGHTS);
                    3
                }
                Command::FactoryReset | Command::Save => 4,
            };
            st.accepted[k] += 1;
        }
    }
}

fn check_query(q: &Query<'_>, m: &LinkModel) {
    assert_eq!(q.len(), m.inputs);
    let mut x = vec![f32::NAN; m.inputs];
    assert_eq!(q.fill(255.0, &mut x), m.inputs);
    for v in x {
        assert!(v.is_finite() && v.abs() <= m.limit, "{v}");
    }
}

fn feed<const N: usize>(dec: &mut Decoder<N>, bytes: &[u8], m: &LinkModel, st: &mut Stats) {
    for &b in bytes {
        match dec.push(b) {
            None => {}
            Some(Ok(f)) => {
                assert!(f.payload.len() <= Decoder::<N>::CAPACITY);
                check_frame(&f, m, st)
            }
            Some(Err(LinkError::Header { .. })) => st.header += 1,
            Some(Err(LinkError::Length { len, .. })) => {
                assert!(usize::from(len) > Decoder::<N>::CAPACITY);
                st.length += 1
            }
            Some(Err(LinkError::Crc { .. })) => st.crc += 1,
            Some(Err(e)) => panic!("decoder returned an encoding error {e:?}"),
        }
    }
}

#[test]
fn link_fuzz_decoder_and_validators() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let t0 = std::time::Instant::now();
    let m = LinkModel::new(16, 10, 300);
    let mut rng = Rng::new(0x11AC_F00D);
    // One long-lived decoder sees everything back to back, as a UART
    // would; a small one (64-byte payloads) also skips oversized frames.
    let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();
    let mut small: Decoder<64> = Decoder::new();
    let (mut st, mut st_small) = (Stats::default(), Stats::default());
    // A third decoder is reset before each frame, to judge frames one
    // by one: a valid request is accepted, a poisoned one rejected by
    // the checks after decoding.
    let mut iso: Decoder<MAX_PAYLOAD> = Decoder::new();
    let mut st_iso = Stats::default();
    for _ in 0..FUZZ_FRAMES {
        let (bytes, expect) = match rng.below(10) {
            0 | 1 => (valid_request(&mut rng, &m), Some(true)),
            2 | 3 => (poisoned_request(&mut rng, &m), Some(false)),
            4 => (garbage(&mut rng), None),
            _ => (mutated_frame(&mut rng, &m), None),
        };
        st.frames += 1;
        st.bytes += bytes.len();
        let r = catch_unwind(AssertUnwindSafe(|| {
            feed(&mut dec, &bytes, &m, &mut st);
            feed(&mut small, &bytes, &m, &mut st_small);
            iso.reset();
            let before = (st_iso.decoded, st_iso.accepted.iter().sum::<usize>());
            feed(&mut iso, &bytes, &m, &mut st_iso);
            if let Some(ok) = expect {
                assert_eq!(st_iso.decoded, before.0 + 1);
                assert_eq!(
                    st_iso.accepted.iter().sum::<usize>(),
                    before.1 + usize::from(ok)
                );
            }
        }));
        if r.is_err() {
            st.panics += 1;
        }
    }
    // Whatever state the stream left, a frame after MAX_FRAME zeros
    // decodes.
    let ok = req(&Request::Status, 1);
    let mut tail = vec![0u8; MAX_FRAME];
    tail.extend_from_slice(&ok);
    let got = decode_all(&mut dec, &tail);
    assert_eq!(
        got.last().map(|r| r.as_ref().map(|f| f.seq).ok()),
        Some(Some(1))
    );
    let elapsed = t0.elapsed();

    std::println!(
        "link fuzz: {} frames ({} bytes) in {:.2} s, {} panics",
        st.frames,
        st.bytes,
        elapsed.as_secs_f64(),
        st.panics
    );
    for (name, s) in [
        ("stream, 4096-byte decoder", &st),
        ("stream, 64-byte decoder", &st_small),
        ("frame by frame (reset before each)", &st_iso),
    ] {
        std::println!(
            "  {name}: {} frames decoded ({} read as replies); dropped by the decoder: header {}, length {}, crc {}",
            s.decoded, s.replies, s.header, s.length, s.crc
        );
        std::println!(
            "    accepted: learn {}, predict {}, status {}, pull {}, factory-reset {}",
            s.accepted[0],
            s.accepted[1],
            s.accepted[2],
            s.accepted[3],
            s.accepted[4]
        );
        let mut line = std::string::String::from("    rejected:");
        for c in 1..=12u8 {
            let n = s.rejected[c as usize];
            if n > 0 {
                line += &std::format!(" {} {n},", Reason::from_code(c).unwrap().name());
            }
        }
        std::println!("{}", line.trim_end_matches(','));
    }
    assert_eq!(st.panics, 0);
    assert!(st.frames >= 100_000);
    assert!(st.accepted.iter().all(|&n| n > 100), "{:?}", st.accepted);
    assert!(st.header > 0 && st.length > 0 && st.crc > 0);
    for r in [
        Reason::Length,
        Reason::Type,
        Reason::Encoding,
        Reason::Shape,
        Reason::NonFinite,
        Reason::Range,
        Reason::Label,
        Reason::Offset,
    ] {
        assert!(
            st.rejected[r.code() as usize] > 100,
            "{}: {:?}",
            r.name(),
            st.rejected
        );
    }
    assert!(st_small.length > 0);
}
