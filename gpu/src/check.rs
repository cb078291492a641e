//! The two measurements of `gpu/check.sh`, as library calls for the host
//! CLI: [`crosscheck`] (`fdgr crosscheck`) and [`bench()`]
//! (`fdgr bench --backend gpu`). Both print as one JSON line
//! ([`CrossCheck::to_json`], [`Bench::to_json`]), which check.sh reads.

use std::time::Instant;

use fdgr_kernel::model::{Model, Node, Op};
use fdgr_kernel::rng::init_params;
use fdgr_kernel::{Exec, Method, Net, Rng, Sgd, SgdState, Targets};

use crate::device::Device;
use crate::error::GpuError;
use crate::trainer::Trainer;
use crate::{plan, Cuda, GpuOptions, GpuTrainer, Precision};

/// A model under test: the planned network, its name (`784-512-512-10`,
/// `resnet20`, …) and its hidden activation's name.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The planned model.
    pub model: Model<Vec<Node>>,
    /// Its name, as `--model` gave it.
    pub name: String,
    /// The hidden activation (`tanh`, `relu`, …).
    pub act: &'static str,
}

/// The outcome of one cross-check: the same steps of one method from the
/// same θ on the same batches, GPU against the CPU kernel.
///
/// For an MLP, gate it on a smooth activation (tanh): two correct f32 implementations
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
    /// Largest relative difference of the batch-norm running statistics
    /// after the steps (per layer and statistic, as `max_rel_diff`; 0
    /// without batch norm).
    pub state_rel_diff: f64,
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
            "{{\"kind\":\"crosscheck\",\"method\":{},\"model\":{},\"act\":{},\"batch\":{},\"steps\":{},\"max_rel_diff\":{},\"loss_rel_diff\":{},\"state_rel_diff\":{},\"tolerance\":{},\"passed\":{}}}",
            json_str(self.method),
            json_str(&self.model),
            json_str(self.act),
            self.batch,
            self.steps,
            json_num(self.max_rel_diff),
            json_num(self.loss_rel_diff),
            json_num(self.state_rel_diff),
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

/// The tensors of θ, in order: each layer's weight and bias (batch norm:
/// γ and β; [`fdgr_kernel::model::Op::tensors`]), as ranges of θ — the
/// trained part of each (a layer that trains its bias alone has its bias).
pub fn tensors(model: &Model<Vec<Node>>) -> Vec<std::ops::Range<usize>> {
    let mut v = vec![];
    for n in model.nodes() {
        for (_, r) in n.trained_tensors() {
            v.push(n.param_off + r.start..n.param_off + r.end);
        }
    }
    v
}

/// The running statistics, per batch-norm layer and statistic, as ranges
/// of the state vector.
pub fn state_tensors(model: &Model<Vec<Node>>) -> Vec<std::ops::Range<usize>> {
    let mut v = vec![];
    for n in model.nodes() {
        if let Op::BatchNorm = n.op {
            let (o, c) = (n.state_off, n.in_dims.c);
            v.push(o..o + c);
            v.push(o + c..o + 2 * c);
        }
    }
    v
}

/// Largest over `parts` of max|a − b| / max|b| (NaN if anything is not
/// finite).
pub fn max_rel_diff_in(parts: &[std::ops::Range<usize>], a: &[f32], b: &[f32]) -> f64 {
    let mut worst = 0.0f64;
    for r in parts {
        let (mut diff, mut mag) = (0.0f64, 0.0f64);
        for (x, y) in a[r.clone()].iter().zip(&b[r.clone()]) {
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
    worst
}

/// Largest over the tensors of `model` of max|a − b| / max|b|.
pub fn max_rel_diff(model: &Model<Vec<Node>>, a: &[f32], b: &[f32]) -> f64 {
    max_rel_diff_in(&tensors(model), a, b)
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
    /// Gradient clipping (`--clip-norm`): both sides clip d to this norm.
    pub clip_norm: Option<f32>,
    /// Amortized GR (`--gr-every`): a fresh ascent on every k-th step
    /// (steps 0, k, 2k, …), the stored one reused on the others; 1: every
    /// step fresh, no stored correction.
    pub gr_every: usize,
}

impl CrossCheckConfig {
    /// The kernel's step options of step `i`.
    fn step_options(&self, i: usize) -> fdgr_kernel::StepOptions<f32> {
        fdgr_kernel::StepOptions {
            clip_norm: self.clip_norm,
            ascent: if i % self.gr_every.max(1) == 0 {
                fdgr_kernel::Ascent::Fresh
            } else {
                fdgr_kernel::Ascent::Reuse
            },
        }
    }

    /// The defaults of `fdgr crosscheck`: the paper's optimizer (momentum
    /// 0.9, weight decay 1e-4), lr 0.05, seed 1, tolerance 1e-4 in f32
    /// (1e-2 with TF32, 5e-2 with bf16 products).
    pub fn new(batch: usize, steps: usize, precision: Precision) -> Self {
        CrossCheckConfig {
            batch,
            steps,
            opt: Sgd::paper(),
            lr: 0.05,
            seed: 1,
            tolerance: match precision {
                Precision::F32 => 1e-4,
                Precision::Tf32 => 1e-2,
                Precision::Bf16 => 5e-2,
            },
            clip_norm: None,
            gr_every: 1,
        }
    }
}

/// `steps` steps of `method` on device `dev` and on the CPU kernel
/// (`fdgr_kernel::Net` with the executor `exec`: the serial loops, or the
/// host's parallel ones), from the same θ (`init_params`) on the same
/// batches of a synthetic data set.
pub fn crosscheck_on<D: Device, E: Exec<f32> + Clone>(
    dev: D,
    subject: &Subject,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
    exec: E,
) -> Result<CrossCheck, GpuError> {
    crosscheck_impl(dev, subject, method, cfg, exec, &mut None)
}

fn crosscheck_impl<D: Device, E: Exec<f32> + Clone>(
    dev: D,
    subject: &Subject,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
    exec: E,
    keep: &mut Option<D>,
) -> Result<CrossCheck, GpuError> {
    let model = &subject.model;
    let (b, p) = (cfg.batch, model.param_count());
    let (n0, k) = (model.input.len(), model.outputs());
    let n = 4 * b;
    let (x, y) = synthetic_data(n, n0, k, cfg.seed);
    let mut rng = Rng::new(cfg.seed ^ 0x5EED);
    let mut theta0 = vec![0.0f32; p];
    // a model that trains some of its parameters (`Train`) reads the
    // others from every parameter's vector: drawn whole, θ its trained part
    let whole = if model.sizes.params == model.sizes.all_params {
        init_params(model.nodes(), &mut theta0, &mut rng);
        None
    } else {
        let all: Vec<_> = model
            .nodes()
            .iter()
            .map(|n| {
                let mut m = *n;
                m.param_off = n.frozen_off;
                m.param_len = n.all_len;
                m
            })
            .collect();
        let mut whole = vec![0.0f32; model.sizes.all_params];
        init_params(&all, &mut whole, &mut rng);
        model.gather(&whole, &mut theta0)?;
        Some(whole)
    };
    let batches: Vec<Vec<u32>> = (0..cfg.steps)
        .map(|_| (0..b).map(|_| rng.below(n) as u32).collect())
        .collect();
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
    let mut ws = vec![0.0f32; model.workspace_len(b, method.needs_hvp())];
    let mut th = theta0.clone();
    let (mut dir, mut mom, mut pt, mut pt2) =
        (vec![0.0; p], vec![0.0; p], vec![0.0; p], vec![0.0; p]);
    let mut st = SgdState::default();
    let mut cpu_losses = vec![];
    let mut fresh = true;
    let amortized = cfg.gr_every > 1;
    let mut corr = vec![0.0f32; if amortized { p } else { 0 }];
    for (i, (xb, yb)) in host_batches.iter().enumerate() {
        let mut cpu = if fresh {
            Net::from_model(model.borrowed(), exec.clone(), &mut ws[..])?
        } else {
            Net::resume(model.borrowed(), exec.clone(), &mut ws[..])?
        };
        fresh = false;
        if let Some(w) = &whole {
            cpu.set_frozen(w)?;
        }
        cpu.set_batch(xb, Targets::Classes(yb))?;
        let bufs = fdgr_kernel::Buffers {
            theta: &mut th[..],
            dir: &mut dir[..],
            state: [Some(&mut mom[..]), None],
            point: Some(&mut pt[..]),
            point2: Some(&mut pt2[..]),
            correction: if amortized { Some(&mut corr[..]) } else { None },
        };
        cpu_losses.push(fdgr_kernel::step_with(
            &mut cpu,
            method,
            &cfg.opt,
            &mut st,
            cfg.lr,
            &cfg.step_options(i),
            bufs,
        )?);
    }
    let cpu_state = ws[ws.len() - model.sizes.state..].to_vec();

    // device
    let mut t = Trainer::new(dev, model.clone(), b, method, &cfg.opt)?;
    t.set_data(&x, &y)?;
    if let Some(w) = &whole {
        t.set_frozen(w)?;
    }
    t.set_params(&theta0, None)?;
    t.set_amortized(amortized)?;
    let mut gst = SgdState::default();
    let mut loss_rel = 0.0f64;
    for (i, (idx, cl)) in batches.iter().zip(&cpu_losses).enumerate() {
        let x = cfg.step_options(i);
        let gl = t.step_with(idx, None, method, &cfg.opt, &x, &mut gst, cfg.lr)?;
        let rel = (gl as f64 - *cl as f64).abs() / (*cl as f64).abs().max(1e-30);
        loss_rel = if rel.is_nan() {
            f64::NAN
        } else {
            loss_rel.max(rel)
        };
    }
    let mut gth = vec![0.0f32; p];
    t.params(&mut gth, None)?;
    let (gpu_state, _) = t.state()?;
    *keep = Some(t.into_device());
    let rel = max_rel_diff(model, &gth, &th);
    let srel = max_rel_diff_in(&state_tensors(model), &gpu_state, &cpu_state);
    Ok(CrossCheck {
        method: method.name(),
        model: subject.name.clone(),
        act: subject.act,
        batch: b,
        steps: cfg.steps,
        max_rel_diff: rel,
        loss_rel_diff: loss_rel,
        state_rel_diff: srel,
        tolerance: cfg.tolerance,
        passed: rel.is_finite()
            && loss_rel.is_finite()
            && srel.is_finite()
            && rel <= cfg.tolerance
            && srel <= cfg.tolerance,
    })
}

/// [`crosscheck_on`] for each of `methods` on one device, in turn.
pub fn crosscheck_all_on<D: Device, E: Exec<f32> + Clone>(
    mut dev: D,
    subject: &Subject,
    methods: &[Method<f32>],
    cfg: &CrossCheckConfig,
    exec: E,
) -> Result<Vec<CrossCheck>, GpuError> {
    let mut out = Vec::with_capacity(methods.len());
    for m in methods {
        let mut slot = None;
        let r = crosscheck_impl(dev, subject, m, cfg, exec.clone(), &mut slot)?;
        dev = slot.ok_or_else(|| GpuError::Cuda("device lost".into()))?;
        out.push(r);
    }
    Ok(out)
}

/// The cross-check of `fdgr crosscheck`: `methods` (usually
/// [`crosscheck_methods`], every method) on CUDA device 0, compiling the
/// kernels once, against the CPU kernel on `exec`. The host prints each
/// result's [`CrossCheck::to_json`] and exits non-zero unless all passed.
pub fn crosscheck_all<E: Exec<f32> + Clone>(
    subject: &Subject,
    methods: &[Method<f32>],
    cfg: &CrossCheckConfig,
    options: GpuOptions,
    exec: E,
) -> Result<Vec<CrossCheck>, GpuError> {
    let dev = Cuda::new(0, &options, cfg.batch)?;
    crate::error::guarded("cross-check", || {
        crosscheck_all_on(dev, subject, methods, cfg, exec)
    })
}

/// [`crosscheck_on`] on CUDA device 0.
pub fn crosscheck<E: Exec<f32> + Clone>(
    subject: &Subject,
    method: &Method<f32>,
    cfg: &CrossCheckConfig,
    options: GpuOptions,
    exec: E,
) -> Result<CrossCheck, GpuError> {
    let dev = Cuda::new(0, &options, cfg.batch)?;
    crate::error::guarded("cross-check", || {
        crosscheck_on(dev, subject, method, cfg, exec)
    })
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
    /// The precision of the products (`f32`, `tf32`, `bf16`).
    pub precision: &'static str,
    /// How convolutions ran (`cuDNN …` or the im2col fallback).
    pub conv: String,
    /// Device.
    pub device: String,
}

impl Bench {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"kind\":\"bench\",\"impl\":\"fdgr\",\"method\":{},\"model\":{},\"batch\":{},\"steps\":{},\"ms_median\":{},\"ms_min\":{},\"ms_wall\":{},\"steps_per_s\":{},\"flops_per_step\":{},\"gflops\":{},\"precision\":{},\"tf32\":{},\"conv\":{},\"device\":{}}}",
            json_str(self.method),
            json_str(&self.model),
            self.batch,
            self.steps,
            json_num(self.ms_median),
            json_num(self.ms_min),
            json_num(self.ms_wall),
            json_num(1e3 / self.ms_median),
            json_num(self.flops_per_step),
            json_num(self.gflops),
            json_str(self.precision),
            self.precision == "tf32",
            json_str(&self.conv),
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
    subject: &Subject,
    batch: usize,
    method: &Method<f32>,
    steps: usize,
    warmup: usize,
    options: GpuOptions,
) -> Result<Bench, GpuError> {
    let opt = Sgd::paper();
    let model = &subject.model;
    let mut t = GpuTrainer::new(model.clone(), batch, method, &opt, options)?;
    let n = 2 * batch;
    let (x, y) = synthetic_data(n, model.input.len(), model.outputs(), 7);
    t.set_data(&x, &y)?;
    let mut rng = Rng::new(11);
    let mut theta = vec![0.0f32; model.param_count()];
    init_params(model.nodes(), &mut theta, &mut rng);
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
    let flops = plan::step_flops(model, batch, method);
    Ok(Bench {
        method: method.name(),
        model: subject.name.clone(),
        batch,
        steps,
        ms_median,
        ms_min,
        ms_wall: wall / steps.max(1) as f64,
        flops_per_step: flops,
        gflops: flops / (ms_median * 1e6),
        precision: options.precision.name(),
        conv: t.conv_engine(),
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
            state_rel_diff: 0.0,
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
        let sh = fdgr_kernel::Shape::try_new(&[2, 2, 1], Act::Relu, Loss::Mse).unwrap();
        let s = crate::memory::mlp_model(&sh).unwrap();
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
