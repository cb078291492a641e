//! Per-step time of the kernel's methods, single thread, serial executor.
//!
//! `cargo bench -p fdgr-kernel --bench steps`
//!
//! Configurations: 64-32-10 tanh at batch 1 and 16, and 784-512-512-10
//! ReLU at batch 128; methods sgd, db, fgr, bgr, sam with the paper's
//! optimizer (momentum 0.9, weight decay 1e-4).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fdgr_kernel::{
    init_mlp, step, Act, Buffers, Loss, Method, Mlp, Rng, Serial, Sgd, SgdState, Shape, Targets,
};
use std::hint::black_box;
use std::time::Duration;

fn bench_config(c: &mut Criterion, dims: &[usize], act: Act, batch: usize) {
    let shape = Shape::try_new(dims, act, Loss::SoftmaxCe).expect("shape");
    let p = shape.param_count();
    let mut rng = Rng::new(1);
    let mut theta0 = vec![0.0f32; p];
    init_mlp(&shape, &mut theta0, &mut rng);
    let x: Vec<f32> = (0..batch * shape.inputs())
        .map(|_| rng.uniform() as f32)
        .collect();
    let y: Vec<u32> = (0..batch)
        .map(|_| rng.below(shape.outputs()) as u32)
        .collect();
    let methods = [
        Method::Sgd,
        Method::Db { gamma: 0.01 },
        Method::Fgr {
            gamma: 0.01,
            eps: 0.1,
        },
        Method::Bgr {
            gamma: 0.01,
            eps: 0.1,
        },
        Method::Sam { rho: 0.05 },
    ];
    let name = format!("{shape}-{}-b{batch}", act.name());
    let mut g = c.benchmark_group(name);
    if batch >= 64 {
        g.sample_size(10)
            .measurement_time(Duration::from_secs(6))
            .warm_up_time(Duration::from_secs(1));
    } else {
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
    }
    let mut net = Mlp::new(
        shape,
        Serial,
        vec![0.0f32; shape.workspace_len(batch, true)],
    );
    net.set_batch(&x, Targets::Classes(&y)).expect("batch");
    let opt = Sgd::paper();
    for m in methods {
        let mut theta = theta0.clone();
        let (mut d, mut pt, mut mom) = (vec![0.0f32; p], vec![0.0f32; p], vec![0.0f32; p]);
        let mut st = SgdState::default();
        g.bench_function(BenchmarkId::from_parameter(m.name()), |b| {
            b.iter(|| {
                let bufs = Buffers {
                    theta: &mut theta[..],
                    dir: &mut d[..],
                    state: [Some(&mut mom[..]), None],
                    point: Some(&mut pt[..]),
                    point2: None,
                    correction: None,
                };
                black_box(step(&mut net, &m, &opt, &mut st, 1e-3, bufs).expect("finite step"))
            })
        });
    }
    g.finish();
}

fn steps(c: &mut Criterion) {
    bench_config(c, &[64, 32, 10], Act::Tanh, 1);
    bench_config(c, &[64, 32, 10], Act::Tanh, 16);
    bench_config(c, &[784, 512, 512, 10], Act::Relu, 128);
}

criterion_group!(benches, steps);
criterion_main!(benches);
