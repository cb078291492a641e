//! The two measurements of `gpu/check.sh`, as library calls for the host
//! CLI: [`crosscheck`] (`fdgr crosscheck`) and [`bench()`]
//! (`fdgr bench --backend gpu`). Both print as one JSON line
//! ([`CrossCheck::to_json`], [`Bench::to_json`]), which check.sh reads.

use std::time::Instant;

use fdgr_kernel::{init_mlp, Method, Mlp, Rng, Serial, Sgd, SgdState, Shape, Targets};

use crate::device::Device;
use crate::error::GpuError;
use crate::trainer::Trainer;
use crate::{plan, Cuda, GpuOptions, GpuTrainer};

/// The outcome of one cross-check: the same steps of one method from the
/// same θ on the same batches, GPU against the CPU kernel.
///
/// Gate it on a smooth activation (tanh): two correct f32 implementations
/// then stay within a few 1e-6 after 20 steps at 784-512-512-10, b128. With
/// ReLU, rounding differences of 1e-7 occasionally flip a unit whose
/// pre-activation is ~0 across the kink, which changes its δ by O(1) and
/// the weights by ~1e-3 relative (seen on the CPU emulator for `sam`, see
/// `full_size_rounding_drift` in the tests); ReLU results are informative
/// but not a pass/fail criterion at 1e-4.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossCheck {
    /// Method name.
    pub method: &'static str,
    /// Model, e.g. `784-512-512-10`.
    pub model: String,
    /// Hidden activation (`tanh`, `relu`, …).
    pub act: &'static str,
    /// Batch size.
    pub batch: usize,
    /// Steps run.
    pub steps: usize,
    /// Largest relative difference of the parameters after the steps: for
    /// each tensor (every W_l and b_l), max|θ_gpu − θ_cpu| / max|θ_cpu|,
    /// then the largest over tensors.
    pub max_rel_diff: f64,
    /// Largest relative difference of the step losses, over the steps.
    pub loss_rel_diff: f64,
    /// The bound `max_rel_diff` must stay under.
    pub tolerance: f64,
    /// `max_rel_diff <= tolerance` (and both finite).
    pub passed: bool,
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:e}")
    } else {
        "null".into()
    }
}

impl CrossCheck {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"kind\":\"crosscheck\",\"method\":{},\"model\":{},\"act\":{},\"batch\":{},\"steps\":{},\"max_rel_diff\":{},\"loss_rel_diff\":{},\"tolerance\":{},\"passed\":{}}}",
            json_str(self.method),
            json_str(&self.model),
            json_str(self.act),
            self.batch,
            self.steps,
            json_num(self.max_rel_diff),
            json_num(self.loss_rel_diff),
            json_num(self.tolerance),
            self.passed
        )
    }
}

/// The methods a cross-check covers, with the hyper-parameters it uses
/// (γ, ε, ρ of the paper's range; a flood level between the first losses
/// so both signs occur).
pub fn crosscheck_methods() -> [Method<f32>; 8] {
    Method::all(0.05, 0.1, 0.05, 2.2)
}

/// A synthetic classification set: `n` samples of `n0` inputs in [0, 1)
/// and labels below `k`, reproducible from `seed`.
pub fn synthetic_data(n: usize, n0: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut r = Rng::new(seed);
    let x = (0..n * n0).map(|_| r.uniform() as f32).collect();
    let y = (0..n).map(|_| r.below(k) as u32).collect();
    (x, y)
}

/// Largest over the tensors of `shape` of max|a − b| / max|b|.
pub fn max_rel_diff(shape: &Shape, a: &[f32], b: &[f32]) -> f64 {
    let mut worst = 0.0f64;
    for l in 1..=shape.layers() {
        let o = shape.weight_offset(l);
        let nw = shape.dim(l) * shape.dim(l - 1);
        for (lo, hi) in [(o, o + nw), (o + nw, o + nw + shape.dim(l))] {
            let (mut diff, mut mag) = (0.0f64, 0.0f64);
            for (x, y) in a[lo..hi].iter().zip(&b[lo..hi]) {
                let d = (*x as f64 - *y as f64).abs();
                if !d.is_finite() {
                    // NaN or ∞ anywhere makes the check fail
                    return f64::NAN;
                }
                diff = diff.max(d);
                mag = mag.max((*y as f64).abs());
            }
            if diff > 0.0 {
                worst = worst.max(diff / mag.max(f64::MIN_POSITIVE));
            }
        }
    }
    worst
}

/// The settings of a cross-check.
#[derive(Clone, Copy, Debug)]
pub struct CrossCheckConfig {
    /// Batch size.
    pub batch: usize,
    /// Steps.
    pub steps: usize,
    /// Optimizer.
    pub opt: Sgd<f32>,
    /// Learning rate.
    pub lr: f32,
    /// Seed of θ, the data and the batches.
    pub seed: u64,
    /// Bound on `max_rel_diff`.
    pub tolerance: f64,
}

impl CrossCheckConfig {
    /// The defaults of `fdgr crosscheck`: the paper's optimizer (momentum
    /// 0.9, weight decay 1e-4), lr 0.05, seed 1, tolerance 1e-4 (1e-2 with
    /// TF32).
    pub fn new(batch: usize, steps: usize, tf32: bool) -> Self {
        CrossCheckConfig {
            batch,
            steps,
            opt: Sgd::paper(),
            lr: 0.05,
            seed: 1,
            tolerance: if tf32 { 1e-2 } else { 1e-4 },
        }
    }
}

/// `steps` steps of `method` on device `dev` and on the CPU kernel
/// (`fdgr_kernel::Mlp` with the serial executor), from the same θ
/// (`init_mlp`) on the same batches of a synthetic data set.
pub fn crosscheck_on<D: Device>(
    dev: D,
    shape: Shape,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
) -> Result<CrossCheck, GpuError> {
    crosscheck_impl(dev, shape, method, cfg, &mut None)
}

fn crosscheck_impl<D: Device>(
    dev: D,
    shape: Shape,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
    keep: &mut Option<D>,
) -> Result<CrossCheck, GpuError> {
    let (b, p) = (cfg.batch, shape.param_count());
    let n = 4 * b;
    let (x, y) = synthetic_data(n, shape.inputs(), shape.outputs(), cfg.seed);
    let mut rng = Rng::new(cfg.seed ^ 0x5EED);
    let mut theta0 = vec![0.0f32; p];
    init_mlp(&shape, &mut theta0, &mut rng);
    let batches: Vec<Vec<u32>> = (0..cfg.steps)
        .map(|_| (0..b).map(|_| rng.below(n) as u32).collect())
        .collect();
    let n0 = shape.inputs();
    let host_batches: Vec<(Vec<f32>, Vec<u32>)> = batches
        .iter()
        .map(|idx| {
            let mut xb = Vec::with_capacity(b * n0);
            for &i in idx {
                xb.extend_from_slice(&x[i as usize * n0..(i as usize + 1) * n0]);
            }
            (xb, idx.iter().map(|&i| y[i as usize]).collect())
        })
        .collect();

    // CPU kernel
    let mut cpu = Mlp::new(
        shape,
        Serial,
        vec![0.0f32; shape.workspace_len(b, method.needs_hvp())],
    );
    let mut th = theta0.clone();
    let (mut dir, mut mom, mut pt, mut pt2) =
        (vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![0.0; p]);
    let mut st = SgdState::default();
    let mut cpu_losses = vec![];
    for (xb, yb) in &host_batches {
        cpu.set_batch(xb, Targets::Classes(yb))?;
        let bufs = fdgr_kernel::Buffers {
            theta: &mut th[..],
            dir: &mut dir[..],
            state: [Some(&mut mom[..]), None],
            point: Some(&mut pt[..]),
            point2: Some(&mut pt2[..]),
            correction: None,
        };
        cpu_losses.push(fdgr_kernel::step(
            &mut cpu, method, &cfg.opt, &mut st, cfg.lr, bufs,
        )?);
    }

    // device
    let mut t = Trainer::new(dev, shape, b, method, &cfg.opt)?;
    t.set_data(&x, &y)?;
    t.set_params(&theta0, None)?;
    let mut gst = SgdState::default();
    let mut loss_rel = 0.0f64;
    for (idx, cl) in batches.iter().zip(&cpu_losses) {
        let gl = t.step(idx, method, &cfg.opt, &mut gst, cfg.lr)?;
        let rel = (gl as f64 - *cl as f64).abs() / (*cl as f64).abs().max(1e-30);
        loss_rel = if rel.is_nan() {
            f64::NAN
        } else {
            loss_rel.max(rel)
        };
    }
    let mut gth = vec![0.0f32; p];
    t.params(&mut gth, None)?;
    *keep = Some(t.into_device());
    let rel = max_rel_diff(&shape, &gth, &th);
    Ok(CrossCheck {
        method: method.name(),
        model: shape.to_string(),
        act: shape.act.name(),
        batch: b,
        steps: cfg.steps,
        max_rel_diff: rel,
        loss_rel_diff: loss_rel,
        tolerance: cfg.tolerance,
        passed: rel.is_finite() && loss_rel.is_finite() && rel <= cfg.tolerance,
    })
}

/// [`crosscheck_on`] for each of `methods` on one device, in turn.
pub fn crosscheck_all_on<D: Device>(
    mut dev: D,
    shape: Shape,
    methods: &[Method<f32>],
    cfg: &CrossCheckConfig,
) -> Result<Vec<CrossCheck>, GpuError> {
    let mut out = Vec::with_capacity(methods.len());
    for m in methods {
        let (r, d) = crosscheck_keep(dev, shape, m, cfg)?;
        out.push(r);
        dev = d;
    }
    Ok(out)
}

fn crosscheck_keep<D: Device>(
    dev: D,
    shape: Shape,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
) -> Result<(CrossCheck, D), GpuError> {
    let mut slot = None;
    let r = crosscheck_impl(dev, shape, method, cfg, &mut slot)?;
    let d = slot.ok_or_else(|| GpuError::Cuda("device lost".into()))?;
    Ok((r, d))
}

/// The cross-check of `fdgr crosscheck`: [`crosscheck_methods`] (every
/// method) on CUDA device 0, compiling the kernels once. The host prints
/// each result's [`CrossCheck::to_json`] and exits non-zero unless all
/// passed.
pub fn crosscheck_all(
    shape: Shape,
    cfg: &CrossCheckConfig,
    options: GpuOptions,
) -> Result<Vec<CrossCheck>, GpuError> {
    let dev = Cuda::new(0, &options, cfg.batch)?;
    crate::cuda::guarded("cross-check", || {
        crosscheck_all_on(dev, shape, &crosscheck_methods(), cfg)
    })
}

/// [`crosscheck_on`] on CUDA device 0.
pub fn crosscheck(
    shape: Shape,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
    options: GpuOptions,
) -> Result<CrossCheck, GpuError> {
    let dev = Cuda::new(0, &options, cfg.batch)?;
    crate::cuda::guarded("cross-check", || crosscheck_on(dev, shape, method, cfg))
}

/// Timing of one method on the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Bench {
    /// Method name.
    pub method: &'static str,
    /// Model.
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median GPU time of one step (CUDA events around each queued step).
    pub ms_median: f64,
    /// Fastest step.
    pub ms_min: f64,
    /// Wall time of all timed steps (host included, until the device is
    /// done) divided by the steps.
    pub ms_wall: f64,
    /// Floating-point operations of the step's matrix products
    /// ([`plan::step_flops`]).
    pub flops_per_step: f64,
    /// `flops_per_step / ms_median`, in GFLOP/s.
    pub gflops: f64,
    /// TF32 on.
    pub tf32: bool,
    /// Device.
    pub device: String,
}

impl Bench {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"kind\":\"bench\",\"impl\":\"fdgr\",\"method\":{},\"model\":{},\"batch\":{},\"steps\":{},\"ms_median\":{},\"ms_min\":{},\"ms_wall\":{},\"flops_per_step\":{},\"gflops\":{},\"tf32\":{},\"device\":{}}}",
            json_str(self.method),
            json_str(&self.model),
            self.batch,
            self.steps,
            json_num(self.ms_median),
            json_num(self.ms_min),
            json_num(self.ms_wall),
            json_num(self.flops_per_step),
            json_num(self.gflops),
            self.tf32,
            json_str(&self.device)
        )
    }
}

/// Median of a non-empty list (NaN if empty).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Times `steps` queued steps of `method` (after `warmup` untimed ones) on
/// a synthetic resident data set, with the paper's optimizer, on device 0.
pub fn bench(
    shape: Shape,
    batch: usize,
    method: &Method<f32>,
    steps: usize,
    warmup: usize,
    options: GpuOptions,
) -> Result<Bench, GpuError> {
    let opt = Sgd::paper();
    let mut t = GpuTrainer::new(shape, batch, method, &opt, options)?;
    let n = 2 * batch;
    let (x, y) = synthetic_data(n, shape.inputs(), shape.outputs(), 7);
    t.set_data(&x, &y)?;
    let mut rng = Rng::new(11);
    let mut theta = vec![0.0f32; shape.param_count()];
    init_mlp(&shape, &mut theta, &mut rng);
    t.set_params(&theta, None)?;
    let batches: Vec<Vec<u32>> = (0..warmup + steps)
        .map(|_| (0..batch).map(|_| rng.below(n) as u32).collect())
        .collect();
    let mut st = SgdState::default();
    let lr = 0.01;
    for idx in &batches[..warmup] {
        t.step_async(idx, method, &opt, &mut st, lr)?;
    }
    // a non-finite step only stops the updates; timing goes on
    let _ = t.finish(&mut st);
    let mut events = Vec::with_capacity(2 * steps);
    for _ in 0..2 * steps {
        events.push(t.cuda().timer()?);
    }
    let t0 = Instant::now();
    for (i, idx) in batches[warmup..].iter().enumerate() {
        t.cuda().record(&events[2 * i])?;
        t.step_async(idx, method, &opt, &mut st, lr)?;
        t.cuda().record(&events[2 * i + 1])?;
    }
    let _ = t.finish(&mut st);
    t.synchronize()?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let mut ms = Vec::with_capacity(steps);
    for pair in events.chunks_exact(2) {
        ms.push(
            pair[0]
                .elapsed_ms(&pair[1])
                .map_err(|e| GpuError::Cuda(e.to_string()))? as f64,
        );
    }
    let ms_min = ms.iter().copied().fold(f64::INFINITY, f64::min);
    let ms_median = median(&mut ms);
    let flops = plan::step_flops(&shape, batch, method);
    Ok(Bench {
        method: method.name(),
        model: shape.to_string(),
        batch,
        steps,
        ms_median,
        ms_min,
        ms_wall: wall / steps.max(1) as f64,
        flops_per_step: flops,
        gflops: flops / (ms_median * 1e6),
        tf32: options.tf32,
        device: t.device_name().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::{Act, Loss};

    #[test]
    fn json_lines() {
        let c = CrossCheck {
            method: "fgr",
            model: "784-512-512-10".into(),
            act: "tanh",
            batch: 128,
            steps: 20,
            max_rel_diff: 1.5e-6,
            loss_rel_diff: f64::NAN,
            tolerance: 1e-4,
            passed: true,
        };
        let j = c.to_json();
        assert!(!j.contains('\n'));
        assert!(j.contains("\"max_rel_diff\":1.5e-6"));
        assert!(j.contains("\"loss_rel_diff\":null"));
        assert_eq!(json_str("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn rel_diff_is_per_tensor_and_catches_nan() {
        let s = Shape::try_new(&[2, 2, 1], Act::Relu, Loss::Mse).unwrap();
        let b: Vec<f32> = (0..s.param_count()).map(|i| i as f32 + 1.0).collect();
        let mut a = b.clone();
        assert_eq!(max_rel_diff(&s, &a, &b), 0.0);
        // b₂ is the last entry (value 9), alone in its tensor
        *a.last_mut().unwrap() += 0.09;
        assert!((max_rel_diff(&s, &a, &b) - 0.01).abs() < 1e-6);
        a[0] = f32::NAN;
        assert!(max_rel_diff(&s, &a, &b).is_nan());
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
