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
            state: [Some(&mut mom[..]), None],
            point: Some(&mut p1[..]),
            point2: Some(&mut p2[..]),
            correction: None,
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

/// The same for conv nets: a residual net with batch norm, max and
/// average pooling, grouped and 1×1 convolutions. Every primitive the host
/// parallelizes (im2col + GEMM convolution, channel/plane-parallel batch
/// norm and pooling) runs here against the kernel's serial loops, for
/// every method, including the R-operator's passes (`db`), and the running
/// statistics must agree too.
#[test]
fn serial_and_parallel_executors_agree_on_conv_nets() {
    use fdgr_kernel::{Dims, Layer, Node, Src};
    let layers = vec![
        Layer::conv(8, 3).pad(1).no_bias(),              // 0
        Layer::batch_norm(),                             // 1
        Layer::act(Act::Relu),                           // 2
        Layer::conv(8, 3).pad(1).groups(2),              // 3
        Layer::batch_norm(),                             // 4
        Layer::add(2),                                   // 5
        Layer::act(Act::Tanh),                           // 6
        Layer::max_pool(2),                              // 7
        Layer::conv(16, 3).stride(2).pad(1).no_bias(),   // 8
        Layer::batch_norm(),                             // 9
        Layer::act(Act::Relu),                           // 10
        Layer::conv(16, 1).stride(2).from(Src::Node(7)), // 11
        Layer::add(10),                                  // 12
        Layer::avg_pool(3).stride(1).pad(1),             // 13
        Layer::global_avg_pool(),                        // 14
        Layer::linear(10),                               // 15
    ];
    let input = Dims::new(3, 12, 12);
    let model = fdgr_tests::build(&layers, input, Loss::SoftmaxCe);
    let (b, steps) = (16, 4);
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..b * steps * input.len())
        .map(|_| rng.normal() as f32)
        .collect();
    let y: Vec<u32> = (0..b * steps).map(|_| rng.below(10) as u32).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    fn go<E: Exec<f32>>(
        mut mk: impl FnMut() -> E,
        model: &fdgr_kernel::Model<Vec<Node>>,
        m: &Method<f32>,
        x: &[f32],
        y: &[u32],
        b: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let p = model.param_count();
        let mut theta = vec![0.0f32; p];
        fdgr_kernel::init_params(model.nodes(), &mut theta, &mut Rng::new(3));
        let (mut d, mut p1, mut p2, mut mom) =
            (vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![0.0; p]);
        let mut ws = vec![0.0f32; model.workspace_len(b, true)];
        let mut st = SgdState::default();
        let n0 = model.input.len();
        let mut first = true;
        for (xb, yb) in x.chunks(b * n0).zip(y.chunks(b)) {
            let mut net = if first {
                fdgr_kernel::Net::from_model(model.borrowed(), mk(), &mut ws[..]).unwrap()
            } else {
                fdgr_kernel::Net::resume(model.borrowed(), mk(), &mut ws[..]).unwrap()
            };
            first = false;
            net.set_batch(xb, Targets::Classes(yb)).unwrap();
            let bufs = Buffers {
                theta: &mut theta[..],
                dir: &mut d[..],
                state: [Some(&mut mom[..]), None],
                point: Some(&mut p1[..]),
                point2: Some(&mut p2[..]),
                correction: None,
            };
            step(&mut net, m, &Sgd::paper(), &mut st, 0.05, bufs).unwrap();
        }
        let state = ws[ws.len() - model.sizes.state..].to_vec();
        (theta, state)
    }
    for m in Method::all(0.05, 0.1, 0.05, 1.0) {
        let (a, sa) = go(|| Serial, &model, &m, &x, &y, b);
        let (c, sc) = pool.install(|| go(|| Par { threads: 2 }, &model, &m, &x, &y, b));
        let rel = |u: &[f32], v: &[f32]| {
            let scale = u.iter().fold(0.0f32, |s, v| s.max(v.abs()));
            u.iter()
                .zip(v)
                .fold(0.0f32, |s, (p, q)| s.max((p - q).abs()))
                / scale
        };
        let (dt, ds) = (rel(&a, &c), rel(&sa, &sc));
        println!(
            "{:<5} θ rel diff {dt:.1e}, running stats rel diff {ds:.1e}",
            m.name()
        );
        assert!(dt < 1e-4, "{}: θ differs by {dt:e}", m.name());
        assert!(
            ds < 1e-4,
            "{}: running statistics differ by {ds:e}",
            m.name()
        );
    }
}
