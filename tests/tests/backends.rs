//! The same method on two executors from the same θ and batches: the
//! kernel's serial loops (what the firmware runs) and the host's parallel
//! executor (the `gemm` crate and rayon). They compute the same maths in a
//! different order, so they agree to f32 rounding, not bit for bit.

use fdgr::cpu::Par;
use fdgr_kernel::method::{Buffers, Method};
use fdgr_kernel::{
    init_mlp, step, Act, Exec, Loss, Mlp, Rng, Serial, Sgd, SgdState, Shape, Targets,
};

fn run<E: Exec<f32> + Copy>(
    exec: E,
    shape: Shape,
    m: &Method<f32>,
    x: &[f32],
    y: &[u32],
    b: usize,
) -> Vec<f32> {
    let p = shape.param_count();
    let mut theta = vec![0.0f32; p];
    init_mlp(&shape, &mut theta, &mut Rng::new(3));
    let (mut d, mut p1, mut p2, mut mom) = (vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![0.0; p]);
    let mut ws = vec![0.0f32; shape.workspace_len(b, true)];
    let mut st = SgdState::default();
    for (xb, yb) in x.chunks(b * shape.inputs()).zip(y.chunks(b)) {
        let mut net = Mlp::new(shape, exec, &mut ws[..]);
        net.set_batch(xb, Targets::Classes(yb)).unwrap();
        let bufs = Buffers {
            theta: &mut theta[..],
            dir: &mut d[..],
            momentum: Some(&mut mom[..]),
            point: Some(&mut p1[..]),
            point2: Some(&mut p2[..]),
        };
        step(&mut net, m, &Sgd::paper(), &mut st, 0.05, bufs).unwrap();
    }
    theta
}

#[test]
fn serial_and_parallel_executors_agree() {
    let shape = Shape::try_new(&[96, 64, 48, 10], Act::Tanh, Loss::SoftmaxCe).unwrap();
    let (b, steps) = (32, 10);
    let mut rng = Rng::new(9);
    let x: Vec<f32> = (0..b * steps * 96).map(|_| rng.uniform() as f32).collect();
    let y: Vec<u32> = (0..b * steps).map(|_| rng.below(10) as u32).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for m in Method::all(0.05, 0.1, 0.05, 1.0) {
        let a = run(Serial, shape, &m, &x, &y, b);
        let c = pool.install(|| run(Par { threads: 2 }, shape, &m, &x, &y, b));
        let scale = a.iter().fold(0.0f32, |s, v| s.max(v.abs()));
        let diff = a
            .iter()
            .zip(&c)
            .fold(0.0f32, |s, (u, v)| s.max((u - v).abs()));
        assert!(
            diff / scale < 1e-5,
            "{}: max diff {diff} (scale {scale})",
            m.name()
        );
        let mut init = vec![0.0f32; a.len()];
        init_mlp(&shape, &mut init, &mut Rng::new(3));
        assert!(
            a.iter().zip(&init).any(|(u, v)| u != v),
            "{}: training moved θ",
            m.name()
        );
    }
}
