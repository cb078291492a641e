//! The kernel's data-parallel objective (`fdgr_kernel::dist`) against one
//! process, in f64: N threads, each with its slice of the batch and a
//! communicator that sums in rank order, take every method's step to the
//! step of one objective on the whole batch (global ascent); a non-finite
//! value on one rank is rejected on all of them.

use fdgr_kernel::dist::{AllReduce, AscentMode, DataParallel};
use fdgr_kernel::method::{Buffers, Method};
use fdgr_kernel::{step, Act, Error, Loss, Mlp, Serial, Sgd, SgdState, Targets};
use fdgr_tests::*;
use std::sync::{Arc, Barrier, Mutex};

/// Threads of one process playing ranks: each all-reduce stores every
/// rank's values, then every rank adds them up in rank order.
#[derive(Clone)]
struct Threads {
    rank: usize,
    slots: Arc<Mutex<Vec<Vec<f64>>>>,
    barrier: Arc<Barrier>,
}

impl AllReduce<f64, [f64]> for Threads {
    fn all_reduce(&mut self, v: &mut [f64], s: &mut [f64]) -> Result<(), Error> {
        let mine: Vec<f64> = v.iter().chain(s.iter()).copied().collect();
        self.slots.lock().unwrap()[self.rank] = mine;
        self.barrier.wait();
        let sum: Vec<f64> = {
            let g = self.slots.lock().unwrap();
            let mut acc = vec![0.0; g[0].len()];
            for r in g.iter() {
                for (a, x) in acc.iter_mut().zip(r) {
                    *a += x;
                }
            }
            acc
        };
        self.barrier.wait();
        let (a, b) = sum.split_at(v.len());
        v.copy_from_slice(a);
        s.copy_from_slice(b);
        Ok(())
    }
}

fn slice(b: usize, r: usize, n: usize) -> (usize, usize) {
    let (q, m) = (b / n, b % n);
    let lo = r * q + r.min(m);
    (lo, lo + q + usize::from(r < m))
}

/// One rank's θ after the steps, and the losses the steps returned.
type Outcome = (Vec<f64>, Vec<Result<f64, Error>>);

/// θ after `steps` steps of `m` on (x, labels), on `n` ranks (None: one
/// plain objective); the losses the steps returned.
fn run(
    p: &Problem<f64>,
    x: &[f64],
    m: Method<f64>,
    n: Option<usize>,
    mode: AscentMode,
    steps: usize,
) -> Vec<Outcome> {
    let k = p.shape.inputs();
    let b = p.batch;
    let one = |x: &[f64], labels: &[u32], comm: Option<Threads>| {
        let len = p.theta.len();
        let mut theta = p.theta.clone();
        let (mut d, mut mom, mut p1, mut p2, mut scratch) = (
            vec![0.0; len],
            vec![0.0; len],
            vec![0.0; len],
            vec![0.0; len],
            vec![0.0; len],
        );
        let ws = vec![0.0f64; p.shape.workspace_len(b, true)];
        let mut o = Mlp::new(p.shape, Serial, ws);
        o.set_batch(x, Targets::Classes(labels)).unwrap();
        let mut st = SgdState::default();
        let mut losses = vec![];
        for _ in 0..steps {
            let bufs = Buffers {
                theta: &mut theta[..],
                dir: &mut d[..],
                state: [Some(&mut mom[..]), None],
                point: Some(&mut p1[..]),
                point2: Some(&mut p2[..]),
                correction: None,
            };
            let l = match &comm {
                None => step(&mut o, &m, &Sgd::paper(), &mut st, 0.1, bufs),
                Some(c) => {
                    let mut c = c.clone();
                    let w = labels.len() as f64 / b as f64;
                    let root = c.rank == 0;
                    let mut dp =
                        DataParallel::new(&mut o, &mut c, w, root, mode, Some(&mut scratch[..]));
                    step(&mut dp, &m, &Sgd::paper(), &mut st, 0.1, bufs)
                }
            };
            losses.push(l);
        }
        (theta, losses)
    };
    match n {
        None => vec![one(x, &p.labels, None)],
        Some(n) => {
            let slots = Arc::new(Mutex::new(vec![vec![]; n]));
            let barrier = Arc::new(Barrier::new(n));
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|r| {
                        let (lo, hi) = slice(b, r, n);
                        let c = Threads {
                            rank: r,
                            slots: slots.clone(),
                            barrier: barrier.clone(),
                        };
                        let one = &one;
                        s.spawn(move || one(&x[lo * k..hi * k], &p.labels[lo..hi], Some(c)))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            })
        }
    }
}

#[test]
fn every_method_on_ranks_equals_one_objective_on_the_batch() {
    let p = Problem::<f64>::new(&[5, 6, 4], Act::Tanh, Loss::SoftmaxCe, 7, 3);
    for m in Method::all(0.05, 0.1, 0.05, 1.0) {
        let want = run(&p, &p.x, m, None, AscentMode::Global, 3).remove(0);
        for n in [2, 3] {
            for (r, got) in run(&p, &p.x, m, Some(n), AscentMode::Global, 3)
                .into_iter()
                .enumerate()
            {
                let e = dist(&got.0, &want.0) / norm(&want.0);
                assert!(e < 1e-13, "{m:?} on {n} ranks, rank {r}: θ off by {e:e}");
                for (a, b) in got.1.iter().zip(&want.1) {
                    let (a, b) = (a.unwrap(), b.unwrap());
                    assert!((a - b).abs() <= 1e-13 * b.abs(), "{m:?}: loss {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn local_ascent_averages_the_ranks_own_directions() {
    let p = Problem::<f64>::new(&[5, 6, 4], Act::Tanh, Loss::SoftmaxCe, 6, 4);
    let m = Method::Fgr {
        gamma: 0.05,
        eps: 0.1,
    };
    let got = run(&p, &p.x, m, Some(2), AscentMode::Local, 1);
    // by hand: the mean of each half's own F-GR step direction
    let k = p.shape.inputs();
    let halves: Vec<Vec<f64>> = (0..2)
        .map(|r| {
            let q = Problem {
                shape: p.shape,
                theta: p.theta.clone(),
                values: vec![],
                batch: 3,
                x: p.x[r * 3 * k..(r + 1) * 3 * k].to_vec(),
                labels: p.labels[r * 3..(r + 1) * 3].to_vec(),
            };
            run(&q, &q.x, m, None, AscentMode::Global, 1).remove(0).0
        })
        .collect();
    // one SGD step from θ with momentum 0 state: θ' = θ − lr·(d + wd·θ),
    // linear in d, so the mean of the halves' θ' is θ' of the mean d
    let want: Vec<f64> = halves[0]
        .iter()
        .zip(&halves[1])
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    for (theta, _) in &got {
        let e = dist(theta, &want) / norm(&want);
        assert!(e < 1e-13, "local ascent off by {e:e}");
    }
    let global = run(&p, &p.x, m, Some(2), AscentMode::Global, 1);
    assert!(dist(&global[0].0, &want) / norm(&want) > 1e-9);
}

#[test]
fn a_non_finite_value_on_one_rank_is_rejected_on_every_rank() {
    let p = Problem::<f64>::new(&[5, 6, 4], Act::Tanh, Loss::SoftmaxCe, 6, 5);
    let mut x = p.x.clone();
    x[5 * 5] = f64::NAN; // a sample of rank 1's slice
    for m in [
        Method::Sgd,
        Method::Fgr {
            gamma: 0.05,
            eps: 0.1,
        },
    ] {
        for mode in [AscentMode::Global, AscentMode::Local] {
            for (theta, losses) in run(&p, &x, m, Some(2), mode, 1) {
                assert_eq!(losses[0], Err(Error::NonFinite), "{m:?} {mode:?}");
                assert_eq!(theta, p.theta);
            }
        }
    }
}
