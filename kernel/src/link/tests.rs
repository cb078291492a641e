use super::*;
use crate::rng::Rng;
use std::vec;
use std::vec::Vec;

const MODEL: LinkModel = LinkModel::new(4, 3, 10);

/// A decoded frame or error, owned.
#[derive(Clone, Debug, PartialEq)]
struct Owned {
    kind: u8,
    seq: u16,
    payload: Vec<u8>,
    crc: u32,
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        Frame {
            kind: self.kind,
            seq: self.seq,
            payload: &self.payload,
            crc: self.crc,
        }
    }
}

fn decode_all<const N: usize>(dec: &mut Decoder<N>, bytes: &[u8]) -> Vec<Result<Owned, LinkError>> {
    let mut v = Vec::new();
    for &b in bytes {
        match dec.push(b) {
            None => {}
            Some(Ok(f)) => v.push(Ok(Owned {
                kind: f.kind,
                seq: f.seq,
                payload: f.payload.to_vec(),
                crc: f.crc,
            })),
            Some(Err(e)) => v.push(Err(e)),
        }
    }
    v
}

fn one(bytes: &[u8]) -> Owned {
    let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();
    let mut v = decode_all(&mut dec, bytes);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(dec.is_idle());
    v.pop().unwrap().unwrap()
}

fn raw(kind: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; frame_len(payload.len())];
    let mut w = Writer::raw(kind, seq, &mut out);
    w.bytes(payload);
    assert_eq!(w.finish(), Ok(out.len()));
    out
}

fn req(r: &Request<'_>, seq: u16) -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME];
    let n = r.encode(seq, &mut out).unwrap();
    out.truncate(n);
    out
}

fn rep(r: &Reply<'_>, seq: u16) -> Vec<u8> {
    let mut out = vec![0u8; MAX_FRAME];
    let n = r.encode(seq, &mut out).unwrap();
    out.truncate(n);
    out
}

fn parse(bytes: &[u8], model: &LinkModel) -> Result<(), Nack> {
    parse_request(&one(bytes).frame(), model).map(|_| ())
}

fn fix_header(f: &mut [u8]) {
    f[7] = crc8(&f[2..7]);
}

fn fix_crc(f: &mut [u8]) {
    let n = f.len();
    let c = crc32(&f[2..n - 4]);
    f[n - 4..].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn link_checksums_and_model_id() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc8(b"123456789"), 0xF4);
    const ID: u64 = model_id(b"foobar");
    assert_eq!(ID, 0x8594_4171_f739_67e8);
    assert_eq!(model_id(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(model_id(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn link_header_check_catches_every_error_of_up_to_three_bits() {
    // CRCs are linear: a flip pattern is caught for every header iff it
    // is caught for one.
    let h = [0x01u8, 0x34, 0x12, 0x10, 0x00];
    let c = crc8(&h);
    let flip = |bits: &[usize]| {
        let mut g = h;
        for &b in bits {
            g[b / 8] ^= 1 << (b % 8);
        }
        g
    };
    let mut patterns = 0;
    for i in 0..40 {
        assert_ne!(crc8(&flip(&[i])), c);
        for j in i + 1..40 {
            assert_ne!(crc8(&flip(&[i, j])), c);
            for k in j + 1..40 {
                assert_ne!(crc8(&flip(&[i, j, k])), c);
                patterns += 1;
            }
        }
    }
    assert_eq!(patterns, 9880);
}

#[test]
fn link_frame_layout() {
    let f = req(
        &Request::Learn {
            x: Input::U8(&[9, 8, 7, 6]),
            label: 2,
        },
        0x0102,
    );
    assert_eq!(f.len(), frame_len(3 + 4));
    assert_eq!(
        &f[..8],
        &[0xFD, 0x4C, 0x01, 0x02, 0x01, 7, 0, crc8(&f[2..7])]
    );
    assert_eq!(&f[8..15], &[0, 2, 0, 9, 8, 7, 6]);
    assert_eq!(&f[15..], &crc32(&f[2..15]).to_le_bytes());
    // A reference frame for other implementations: Status, sequence 1
    // (checked against Python's zlib.crc32).
    assert_eq!(
        req(&Request::Status, 1),
        [0xFD, 0x4C, 0x03, 0x01, 0x00, 0x00, 0x00, 0xB0, 0x31, 0x49, 0x57, 0xC1]
    );
    // encode() is Writer with the payload in one piece.
    let mut out = [0u8; 32];
    let n = encode(Kind::Learn, 0x0102, &f[8..15], &mut out).unwrap();
    assert_eq!(&out[..n], &f[..]);
}

#[test]
fn link_every_frame_type_round_trips() {
    let xf = [0.5f32, -1.25, 3.0e-3, 1.0e5];
    let xb = [0u8, 17, 255, 3];
    let inputs = [Input::U8(&xb), Input::F32(F32s::from(&xf[..]))];
    let mut seq = 40_000u16;
    for x in inputs {
        for label in [0u16, 2] {
            seq = seq.wrapping_add(1);
            let f = one(&req(&Request::Learn { x, label }, seq));
            assert_eq!((f.kind, f.seq), (Kind::Learn as u8, seq));
            let Ok(Command::Learn(s)) = parse_request(&f.frame(), &MODEL) else {
                panic!("learn rejected")
            };
            assert_eq!((s.x().input(), s.label()), (x, label));
            assert_eq!(parse_learn(&f.frame(), &MODEL), Ok(s));
        }
        let f = one(&req(&Request::Predict { x }, 7));
        let Ok(Command::Predict(q)) = parse_request(&f.frame(), &MODEL) else {
            panic!("predict rejected")
        };
        assert_eq!(q.input(), x);
        assert_eq!(q.len(), 4);
    }
    for (r, c) in [
        (Request::Status, Command::Status),
        (Request::FactoryReset, Command::FactoryReset),
        (Request::Save, Command::Save),
        (
            Request::Pull {
                offset: 3,
                count: 4,
            },
            Command::Pull {
                offset: 3,
                count: 4,
            },
        ),
        // Clamped to the weights left.
        (
            Request::Pull {
                offset: 8,
                count: 9,
            },
            Command::Pull {
                offset: 8,
                count: 2,
            },
        ),
        (
            Request::Pull {
                offset: 10,
                count: 1,
            },
            Command::Pull {
                offset: 10,
                count: 0,
            },
        ),
    ] {
        let f = one(&req(&r, 65535));
        assert_eq!(f.seq, 65535);
        assert_eq!(parse_request(&f.frame(), &MODEL), Ok(c));
    }
    let big = LinkModel::new(4, 3, 1 << 20);
    let f = one(&req(
        &Request::Pull {
            offset: 0,
            count: u16::MAX,
        },
        0,
    ));
    assert_eq!(
        parse_request(&f.frame(), &big),
        Ok(Command::Pull {
            offset: 0,
            count: MAX_WEIGHTS
        })
    );

    let scores = [0.1f32, f32::NAN, -2.0];
    let weights: Vec<f32> = (0..MAX_WEIGHTS).map(|i| i as f32 * 0.5 - 3.0).collect();
    let status = Status {
        version: VERSION,
        capacity: 4096,
        inputs: 784,
        classes: 10,
        params: 7850,
        model_id: model_id(b"model"),
        step: u64::MAX - 1,
        seen: 12345,
        saves: 3,
        last_loss: 0.693,
        stack_peak: 2048,
    };
    let mut replies = vec![
        Reply::Ack {
            class: 2,
            loss: 1.5,
        },
        Reply::Prediction {
            class: 1,
            scores: F32s::from(&scores[2..]),
        },
        Reply::Prediction {
            class: 0,
            scores: F32s::from(&[][..]),
        },
        Reply::Status(status),
        Reply::Weights {
            offset: 5,
            total: 7850,
            values: F32s::from(&weights[..3]),
        },
        Reply::Weights {
            offset: 7850,
            total: 7850,
            values: F32s::from(&[][..]),
        },
        Reply::Weights {
            offset: 0,
            total: 7850,
            values: F32s::from(&weights[..]),
        },
    ];
    for c in 1..=12 {
        let reason = Reason::from_code(c).unwrap();
        assert_eq!(reason.code(), c);
        replies.push(Reply::Nack(Nack::new(reason, u32::MAX - u32::from(c))));
    }
    for (i, r) in replies.iter().enumerate() {
        let f = one(&rep(r, i as u16));
        assert_eq!((f.kind, f.seq), (r.kind() as u8, i as u16));
        assert_eq!(parse_reply(&f.frame()).as_ref(), Ok(r));
        assert_eq!(
            parse_request(&f.frame(), &MODEL),
            Err(Nack::new(Reason::Type, f.kind.into()))
        );
    }
    // NaN scores survive bit for bit.
    let f = one(&rep(
        &Reply::Prediction {
            class: 1,
            scores: F32s::from(&scores[..]),
        },
        0,
    ));
    let Ok(Reply::Prediction { scores: s, .. }) = parse_reply(&f.frame()) else {
        panic!()
    };
    assert_eq!(s.get(1).map(f32::to_bits), Some(f32::NAN.to_bits()));
    assert_eq!(s.get(3), None);
    // A full chunk of weights is a full payload.
    assert_eq!(rep(&replies[6], 0).len(), MAX_FRAME);
}

#[test]
fn link_every_rejection_reason() {
    let good = req(
        &Request::Learn {
            x: Input::U8(&[1, 2, 3, 4]),
            label: 1,
        },
        77,
    );
    assert_eq!(parse(&good, &MODEL), Ok(()));
    let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();

    // Crc: the frame's CRC-32 (detail 0) or the header check (detail 1).
    let mut f = good.clone();
    f[9] ^= 0x20;
    let e = decode_all(&mut dec, &f);
    assert_eq!(e, [Err(LinkError::Crc { seq: 77 })]);
    assert_eq!(
        LinkError::Crc { seq: 77 }.nack(),
        Some((77, Nack::new(Reason::Crc, 0)))
    );
    let mut f = good.clone();
    f[5] ^= 0x01;
    let e = decode_all(&mut dec, &f);
    assert_eq!(e, [Err(LinkError::Header { seq: 77 })]);
    assert_eq!(
        e[0].clone().unwrap_err().nack(),
        Some((77, Nack::new(Reason::Crc, 1)))
    );

    // Length: over MAX_PAYLOAD (rejected from the header alone) ...
    let mut f = good.clone();
    f[5..7].copy_from_slice(&(MAX_PAYLOAD as u16 + 1).to_le_bytes());
    fix_header(&mut f);
    let e = decode_all(&mut dec, &f[..8]);
    assert_eq!(e, [Err(LinkError::Length { seq: 77, len: 4097 })]);
    assert_eq!(
        e[0].clone().unwrap_err().nack(),
        Some((77, Nack::new(Reason::Length, 4097)))
    );
    assert!(dec.is_idle());
    // ... over the decoder's capacity: skipped whole, even a frame
    // inside it, and the next frame decodes.
    let inner = req(&Request::Status, 5);
    let outer = raw(
        Kind::Learn as u8,
        6,
        &[&[0u8, 1, 0][..], &inner, &[0; 9]].concat(),
    );
    let mut small: Decoder<16> = Decoder::new();
    let e = decode_all(&mut small, &[&outer[..], &good].concat());
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0], Err(LinkError::Length { seq: 6, len: 24 }));
    assert_eq!(e[1].as_ref().unwrap().seq, 77);
    // ... or not the type's layout.
    let len = |kind: Kind, p: &[u8]| parse(&raw(kind as u8, 1, p), &MODEL);
    fn n<T>(r: Reason, d: u32) -> Result<T, Nack> {
        Err(Nack::new(r, d))
    }
    assert_eq!(len(Kind::Status, &[0]), n(Reason::Length, 1));
    assert_eq!(len(Kind::FactoryReset, &[0, 0]), n(Reason::Length, 2));
    assert_eq!(len(Kind::Pull, &[0; 5]), n(Reason::Length, 5));
    assert_eq!(len(Kind::Pull, &[0; 7]), n(Reason::Length, 7));
    assert_eq!(len(Kind::Learn, &[0, 1]), n(Reason::Length, 2));
    assert_eq!(len(Kind::Predict, &[]), n(Reason::Length, 0));
    assert_eq!(
        len(
            Kind::Learn,
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        ),
        n(Reason::Length, 18)
    );
    assert_eq!(len(Kind::Predict, &[1, 0, 0, 0]), n(Reason::Length, 4));

    // Type: unknown, or a reply sent as a request (and the reverse).
    assert_eq!(len(Kind::Ack, &[0; 6]), n(Reason::Type, 0x81));
    assert_eq!(parse(&raw(0x42, 1, &[]), &MODEL), n(Reason::Type, 0x42));
    assert_eq!(parse(&raw(0x00, 1, &[]), &MODEL), n(Reason::Type, 0));
    assert_eq!(parse_reply(&one(&good).frame()), n(Reason::Type, 1));
    assert_eq!(
        parse_learn(&one(&req(&Request::Status, 1)).frame(), &MODEL),
        n(Reason::Type, 3)
    );
    assert_eq!(
        parse_predict(&one(&good).frame(), &MODEL),
        n(Reason::Type, 1)
    );

    // Encoding.
    assert_eq!(
        len(Kind::Learn, &[2, 1, 0, 1, 2, 3, 4]),
        n(Reason::Encoding, 2)
    );
    assert_eq!(
        len(Kind::Predict, &[255, 1, 2, 3, 4]),
        n(Reason::Encoding, 255)
    );

    // Shape.
    let learn = |x: Input<'_>, label| parse(&req(&Request::Learn { x, label }, 1), &MODEL);
    let predict = |x: Input<'_>| parse(&req(&Request::Predict { x }, 1), &MODEL);
    assert_eq!(learn(Input::U8(&[1, 2, 3]), 0), n(Reason::Shape, 3));
    assert_eq!(learn(Input::U8(&[]), 0), n(Reason::Shape, 0));
    assert_eq!(
        learn(Input::F32(F32s::from(&[1.0f32; 5][..])), 0),
        n(Reason::Shape, 5)
    );
    assert_eq!(predict(Input::U8(&[1, 2, 3, 4, 5])), n(Reason::Shape, 5));
    // Four f32 inputs' bytes sent as u8: 16 values.
    assert_eq!(
        len(Kind::Learn, &[&[0u8, 1, 0][..], &[0; 16]].concat()),
        n(Reason::Shape, 16)
    );

    // NonFinite and Range, at the first bad index.
    for (v, r) in [
        (f32::NAN, Reason::NonFinite),
        (f32::INFINITY, Reason::NonFinite),
        (f32::NEG_INFINITY, Reason::NonFinite),
        (2.0e6, Reason::Range),
        (-1.0e38, Reason::Range),
    ] {
        let x = [0.0f32, 1.0, v, v];
        assert_eq!(learn(Input::F32(F32s::from(&x[..])), 0), n(r, 2));
        assert_eq!(predict(Input::F32(F32s::from(&x[..]))), n(r, 2));
    }
    let x = [1.0e6f32, -1.0e6, f32::MIN_POSITIVE, -0.0];
    assert_eq!(learn(Input::F32(F32s::from(&x[..])), 0), Ok(()));
    let tight = LinkModel {
        limit: 1.0,
        ..MODEL
    };
    let f = req(
        &Request::Learn {
            x: Input::F32(F32s::from(&x[..])),
            label: 0,
        },
        1,
    );
    assert_eq!(parse(&f, &tight), n(Reason::Range, 0));
    let loose = LinkModel {
        limit: f32::NAN,
        ..MODEL
    };
    assert_eq!(parse(&f, &loose), Ok(()));
    let nan = [f32::NAN; 4];
    let f = req(
        &Request::Learn {
            x: Input::F32(F32s::from(&nan[..])),
            label: 0,
        },
        1,
    );
    assert_eq!(parse(&f, &loose), n(Reason::NonFinite, 0));

    // Label.
    assert_eq!(learn(Input::U8(&[1, 2, 3, 4]), 3), n(Reason::Label, 3));
    assert_eq!(
        learn(Input::U8(&[1, 2, 3, 4]), u16::MAX),
        n(Reason::Label, 65535)
    );

    // Offset.
    let pull = |offset| parse(&req(&Request::Pull { offset, count: 1 }, 1), &MODEL);
    assert_eq!(pull(11), n(Reason::Offset, 11));
    assert_eq!(pull(u32::MAX), n(Reason::Offset, u32::MAX));
    assert_eq!(pull(10), Ok(()));

    // Replies the host cannot read.
    let reply =
        |kind: Kind, p: &[u8]| parse_reply(&one(&raw(kind as u8, 1, p)).frame()).map(|_| ());
    assert_eq!(reply(Kind::Nack, &[0, 0, 0, 0, 0]), n(Reason::Encoding, 0));
    assert_eq!(
        reply(Kind::Nack, &[13, 0, 0, 0, 0]),
        n(Reason::Encoding, 13)
    );
    assert_eq!(reply(Kind::Nack, &[1, 0, 0, 0]), n(Reason::Length, 4));
    assert_eq!(reply(Kind::Ack, &[0; 7]), n(Reason::Length, 7));
    assert_eq!(reply(Kind::Prediction, &[0; 5]), n(Reason::Length, 5));
    assert_eq!(reply(Kind::Prediction, &[0]), n(Reason::Length, 1));
    assert_eq!(
        reply(Kind::Report, &[0; STATUS_LEN - 1]),
        n(Reason::Length, STATUS_LEN as u32 - 1)
    );
    assert_eq!(reply(Kind::Weights, &[0; 7]), n(Reason::Length, 7));
    assert_eq!(reply(Kind::Weights, &[0; 10]), n(Reason::Length, 10));

    // Every code maps back; no other byte is a reason.
    for c in 0..=255u8 {
        match Reason::from_code(c) {
            Some(r) => assert!((1..=12).contains(&c) && r.code() == c && !r.name().is_empty()),
            None => assert!(c == 0 || c > 12),
        }
    }
}

#[test]
fn link_resynchronises_after_garbage() {
    let frames: Vec<Vec<u8>> = (0..6u16)
        .map(|i| {
            req(
                &Request::Learn {
                    x: Input::U8(&[i as u8; 4]),
                    label: i % 3,
                },
                100 + i,
            )
        })
        .collect();
    let mut dec: Decoder<MAX_PAYLOAD> = Decoder::new();
    let seqs = |v: &[Result<Owned, LinkError>]| -> Vec<Result<u16, LinkError>> {
        v.iter()
            .map(|r| r.as_ref().map(|f| f.seq).map_err(|e| *e))
            .collect()
    };
    // Garbage without a magic, a lone first magic byte, a doubled one.
    let mut s = Vec::new();
    s.extend_from_slice(&[0x00, 0xFF, 0x4C, 0x13, 0xFD, 0x00, 0x4C]);
    s.extend_from_slice(&frames[0]);
    s.push(0xFD);
    s.extend_from_slice(&frames[1]);
    s.extend_from_slice(&[0xFD, 0xFD, 0xFD]);
    s.extend_from_slice(&frames[2]);
    assert_eq!(seqs(&decode_all(&mut dec, &s)), [Ok(100), Ok(101), Ok(102)]);
    // feed() stops right after each frame (or error).
    let ends = [7 + 19, 7 + 19 + 1 + 19, s.len()];
    let (mut at, mut got) = (0, Vec::new());
    while at < s.len() {
        let (n, r) = dec.feed(&s[at..]);
        assert!(n > 0);
        at += n;
        if let Some(r) = r {
            assert_eq!(at, ends[got.len()]);
            got.push(r.map(|f| f.seq));
        }
    }
    assert_eq!(got, [Ok(100), Ok(101), Ok(102)]);

    // A stray magic pair 0 to 7 bytes before a frame: the bad header is
    // reported, its bytes are re-scanned, and the frame is not lost.
    for k in 0..8 {
        let mut s = vec![0xFD, 0x4C];
        s.extend((0..k).map(|j| 0x30 + j as u8));
        s.extend_from_slice(&frames[3]);
        let got = seqs(&decode_all(&mut dec, &s));
        assert_eq!(got.last(), Some(&Ok(103)), "k = {k}: {got:?}");
        assert!(
            matches!(got[0], Err(LinkError::Header { .. })),
            "k = {k}: {got:?}"
        );
        assert!(dec.is_idle());
    }

    // A truncated frame swallows what follows until its length is
    // reached; reset() (on an idle line) drops it.
    let mut s = frames[4][..10].to_vec();
    s.extend_from_slice(&frames[5]);
    assert_eq!(
        seqs(&decode_all(&mut dec, &s)),
        [Err(LinkError::Crc { seq: 104 })]
    );
    decode_all(&mut dec, &frames[4][..10]);
    assert!(!dec.is_idle());
    dec.reset();
    assert_eq!(seqs(&decode_all(&mut dec, &frames[5])), [Ok(105)]);

    // Without a reset, MAX_FRAME bytes that hold no magic always bring
    // the decoder back to hunting.
    let mut f = frames[0].clone();
    f[5..7].copy_from_slice(&(MAX_PAYLOAD as u16).to_le_bytes());
    fix_header(&mut f);
    decode_all(&mut dec, &f[..8]);
    assert!(!dec.is_idle());
    let e = decode_all(&mut dec, &[0u8; MAX_FRAME]);
    assert_eq!(seqs(&e), [Err(LinkError::Crc { seq: 100 })]);
    assert!(dec.is_idle());
    assert_eq!(seqs(&decode_all(&mut dec, &frames[5])), [Ok(105)]);
}

#[test]
fn link_encoding_never_overruns() {
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let r = Request::Learn {
        x: Input::F32(F32s::from(&x[..])),
        label: 1,
    };
    let full = req(&r, 9);
    for n in 0..full.len() {
        let mut out = vec![0xAAu8; n];
        assert_eq!(r.encode(9, &mut out), Err(LinkError::BufferTooSmall), "{n}");
        assert_eq!(
            encode(Kind::Status, 9, &[], &mut out).is_ok(),
            n >= OVERHEAD
        );
    }
    let mut out = vec![0u8; full.len() + 3];
    assert_eq!(r.encode(9, &mut out), Ok(full.len()));
    assert_eq!(&out[..full.len()], &full[..]);
    assert_eq!(&out[full.len()..], &[0, 0, 0]);

    let mut out = vec![0u8; MAX_FRAME + 8];
    let p = vec![0x5Au8; MAX_PAYLOAD];
    assert_eq!(encode(Kind::Learn, 1, &p, &mut out), Ok(MAX_FRAME));
    assert_eq!(one(&out[..MAX_FRAME]).payload, p);
    assert_eq!(
        encode(Kind::Learn, 1, &[0; MAX_PAYLOAD + 1], &mut out),
        Err(LinkError::PayloadTooLong)
    );
    let w = vec![0.0f32; MAX_WEIGHTS + 1];
    let r = Reply::Weights {
        offset: 0,
        total: 0,
        values: F32s::from(&w[..]),
    };
    assert_eq!(r.encode(1, &mut out), Err(LinkError::PayloadTooLong));
    let r = Reply::Weights {
        offset: 0,
        total: 0,
        values: F32s::from(&w[1..]),
    };
    assert_eq!(r.encode(1, &mut out), Ok(MAX_FRAME));
    assert_eq!(LinkError::PayloadTooLong.nack(), None);

    // Weights streamed through a Writer equal the slice's encoding.
    let mut a = [0u8; 64];
    let mut w = Writer::new(Kind::Weights, 3, &mut a);
    w.u32(2).u32(10);
    for i in 2..6 {
        w.f32(i as f32);
    }
    let n = w.finish().unwrap();
    let v = [2.0f32, 3.0, 4.0, 5.0];
    let b = rep(
        &Reply::Weights {
            offset: 2,
            total: 10,
            values: F32s::from(&v[..]),
        },
        3,
    );
    assert_eq!(&a[..n], &b[..]);
}

#[test]
fn link_replay_answers_retransmissions_once_learnt() {
    let a = one(&req(
        &Request::Learn {
            x: Input::U8(&[1, 2, 3, 4]),
            label: 1,
        },
        5,
    ));
    let a2 = one(&req(
        &Request::Learn {
            x: Input::U8(&[1, 2, 3, 5]),
            label: 1,
        },
        5,
    ));
    let st = one(&req(&Request::Status, 5));
    let mut r = Replay::new();
    assert_eq!(r.check(&a.frame()), None);
    r.record(&a.frame(), 2, 0.25);
    let ack = Some(Reply::Ack {
        class: 2,
        loss: 0.25,
    });
    assert_eq!(r.check(&a.frame()), ack);
    assert_eq!(r.check(&a.frame()), ack);
    // Same sequence number, other bytes: a new request.
    assert_eq!(r.check(&a2.frame()), None);
    assert_eq!(r.check(&a.frame()), None);
    r.record(&a.frame(), 2, 0.25);
    assert_eq!(r.check(&st.frame()), None);
    assert_eq!(r.check(&a.frame()), None);
}

#[test]
fn link_samples_feed_the_model() {
    let f = one(&req(
        &Request::Learn {
            x: Input::U8(&[0, 16, 255, 1]),
            label: 2,
        },
        1,
    ));
    let s = parse_learn(&f.frame(), &MODEL).unwrap();
    assert_eq!(
        s.to_ring::<4>(),
        Some(ring::Sample {
            x: [0, 16, 255, 1],
            label: 2
        })
    );
    assert_eq!(s.to_ring::<3>(), None);
    let mut out = [9.0f32; 5];
    assert_eq!(s.x().fill(2.0, &mut out), 4);
    assert_eq!(out, [0.0, 8.0, 127.5, 0.5, 9.0]);
    let x = [0.5f32, -1.0, 2.0, 0.0];
    let f = one(&req(
        &Request::Learn {
            x: Input::F32(F32s::from(&x[..])),
            label: 0,
        },
        1,
    ));
    let s = parse_learn(&f.frame(), &MODEL).unwrap();
    assert_eq!(s.to_ring::<4>(), None);
    let mut out = [0.0f32; 3];
    assert_eq!(s.x().fill(2.0, &mut out), 3);
    assert_eq!(out, [0.5, -1.0, 2.0]);
    let wide = LinkModel::new(4, 300, 1);
    let f = one(&req(
        &Request::Learn {
            x: Input::U8(&[1, 2, 3, 4]),
            label: 299,
        },
        1,
    ));
    assert_eq!(parse_learn(&f.frame(), &wide).unwrap().to_ring::<4>(), None);
}

mod fuzz;
