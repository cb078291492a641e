//! Shared helpers for fdgr's cross-check tests: small seeded problems and
//! numerical derivatives in f64.

use fdgr_kernel::{init_mlp, Act, Loss, Mlp, Objective, Real, Rng, Serial, Shape, Targets};

/// A small classification or regression problem with random parameters.
pub struct Problem<F> {
    /// Model shape.
    pub shape: Shape,
    /// Parameters (PyTorch default init, then nudged so biases are non-zero).
    pub theta: Vec<F>,
    /// Inputs, B × n₀.
    pub x: Vec<F>,
    /// Class labels.
    pub labels: Vec<u32>,
    /// Real targets, B × n_L.
    pub values: Vec<F>,
    /// Batch size.
    pub batch: usize,
}

impl<F: Real> Problem<F> {
    /// A seeded problem.
    pub fn new(dims: &[usize], act: Act, loss: Loss, batch: usize, seed: u64) -> Self {
        let shape = Shape::try_new(dims, act, loss).expect("valid shape");
        let mut rng = Rng::new(seed);
        let mut theta = vec![F::ZERO; shape.param_count()];
        init_mlp(&shape, &mut theta, &mut rng);
        // Scale up so the net is far from linear and the curvature matters.
        for t in theta.iter_mut() {
            *t *= F::from_f64(2.0);
        }
        let x = (0..batch * shape.inputs())
            .map(|_| F::from_f64(rng.normal()))
            .collect();
        let labels = (0..batch)
            .map(|_| rng.below(shape.outputs()) as u32)
            .collect();
        let values = (0..batch * shape.outputs())
            .map(|_| F::from_f64(rng.normal()))
            .collect();
        Problem {
            shape,
            theta,
            x,
            labels,
            values,
            batch,
        }
    }

    /// The targets matching the loss (classes for CE, values for MSE).
    pub fn targets(&self) -> Targets<'_, F> {
        match self.shape.loss {
            Loss::SoftmaxCe => Targets::Classes(&self.labels),
            Loss::Mse => Targets::Values(&self.values),
        }
    }

    /// An objective on this problem's batch with an HVP-sized workspace.
    pub fn objective(&self) -> Mlp<'_, F, Serial, Vec<F>> {
        let ws = vec![F::ZERO; self.shape.workspace_len(self.batch, true)];
        let mut m = Mlp::new(self.shape, Serial, ws);
        m.set_batch(&self.x, self.targets()).expect("valid batch");
        m
    }

    /// A random direction with entries N(0, 1).
    pub fn direction(&self, seed: u64) -> Vec<F> {
        let mut rng = Rng::new(seed);
        (0..self.theta.len())
            .map(|_| F::from_f64(rng.normal()))
            .collect()
    }
}

/// ‖a − b‖₂.
pub fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// ‖a‖₂.
pub fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Gradient of `o` at θ (fresh buffer).
pub fn grad<O: Objective<f64, Vec = [f64]>>(o: &mut O, theta: &[f64]) -> Vec<f64> {
    let mut g = vec![0.0; theta.len()];
    o.loss_grad(theta, &mut g, 1.0, 0.0, fdgr_kernel::Pass::Train)
        .expect("gradient");
    g
}

/// Central-difference gradient of the loss, step h.
pub fn numerical_grad<O: Objective<f64, Vec = [f64]>>(
    o: &mut O,
    theta: &[f64],
    h: f64,
) -> Vec<f64> {
    let mut t = theta.to_vec();
    (0..theta.len())
        .map(|i| {
            t[i] = theta[i] + h;
            let lp = o.loss(&t).expect("loss");
            t[i] = theta[i] - h;
            let lm = o.loss(&t).expect("loss");
            t[i] = theta[i];
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

/// Central-difference Hessian-vector product: (∇L(θ + h·v) − ∇L(θ − h·v))/2h.
pub fn numerical_hvp<O: Objective<f64, Vec = [f64]>>(
    o: &mut O,
    theta: &[f64],
    v: &[f64],
    h: f64,
) -> Vec<f64> {
    let tp: Vec<f64> = theta.iter().zip(v).map(|(t, v)| t + h * v).collect();
    let tm: Vec<f64> = theta.iter().zip(v).map(|(t, v)| t - h * v).collect();
    let gp = grad(o, &tp);
    let gm = grad(o, &tm);
    gp.iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect()
}

/// Least-squares slope of log(y) against log(x).
pub fn loglog_slope(xs: &[f64], ys: &[f64]) -> f64 {
    let lx: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
    let ly: Vec<f64> = ys.iter().map(|y| y.ln()).collect();
    let n = lx.len() as f64;
    let mx = lx.iter().sum::<f64>() / n;
    let my = ly.iter().sum::<f64>() / n;
    let sxy: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = lx.iter().map(|x| (x - mx) * (x - mx)).sum();
    sxy / sxx
}

/// Plans a layer list on inputs of shape `input` (node storage on the heap).
pub fn build(
    layers: &[fdgr_kernel::Layer],
    input: fdgr_kernel::Dims,
    loss: Loss,
) -> fdgr_kernel::Model<Vec<fdgr_kernel::Node>> {
    let mut nodes = vec![fdgr_kernel::Node::EMPTY; layers.len()];
    let sizes = fdgr_kernel::model::plan(layers, input, &mut nodes).expect("valid model");
    fdgr_kernel::Model::from_plan(nodes, input, loss, sizes)
}

/// A layer-list model with a seeded batch and parameters.
pub struct NetProblem<F> {
    /// The planned model.
    pub model: fdgr_kernel::Model<Vec<fdgr_kernel::Node>>,
    /// Parameters: PyTorch's default init, then scaled by 2 and jittered
    /// (so batch-norm γ, β are away from 1, 0).
    pub theta: Vec<F>,
    /// Inputs, B × (C·H·W).
    pub x: Vec<F>,
    /// Class labels.
    pub labels: Vec<u32>,
    /// Real targets.
    pub values: Vec<F>,
    /// Batch size.
    pub batch: usize,
}

impl<F: Real> NetProblem<F> {
    /// A seeded problem on `layers`.
    pub fn new(
        layers: &[fdgr_kernel::Layer],
        input: fdgr_kernel::Dims,
        loss: Loss,
        batch: usize,
        seed: u64,
    ) -> Self {
        let model = build(layers, input, loss);
        let mut rng = Rng::new(seed);
        let mut theta = vec![F::ZERO; model.param_count()];
        fdgr_kernel::init_params(model.nodes(), &mut theta, &mut rng);
        for t in theta.iter_mut() {
            *t = *t * F::from_f64(2.0) + F::from_f64(0.1 * rng.normal());
        }
        let k = model.outputs();
        let x = (0..batch * input.len())
            .map(|_| F::from_f64(rng.normal()))
            .collect();
        let labels = (0..batch).map(|_| rng.below(k) as u32).collect();
        let values = (0..batch * k).map(|_| F::from_f64(rng.normal())).collect();
        NetProblem {
            model,
            theta,
            x,
            labels,
            values,
            batch,
        }
    }

    /// The targets matching the loss.
    pub fn targets(&self) -> Targets<'_, F> {
        match self.model.loss {
            Loss::SoftmaxCe => Targets::Classes(&self.labels),
            Loss::Mse => Targets::Values(&self.values),
        }
    }

    /// An objective on this problem's batch (serial executor, HVP-sized
    /// workspace).
    pub fn objective(&self) -> fdgr_kernel::CpuNet<'_, F, Serial, Vec<fdgr_kernel::Node>, Vec<F>> {
        let ws = vec![F::ZERO; self.model.workspace_len(self.batch, true)];
        let mut n =
            fdgr_kernel::Net::from_model(self.model.clone(), Serial, ws).expect("workspace");
        n.set_batch(&self.x, self.targets()).expect("valid batch");
        n
    }

    /// A random direction with entries N(0, 1).
    pub fn direction(&self, seed: u64) -> Vec<F> {
        let mut rng = Rng::new(seed);
        (0..self.theta.len())
            .map(|_| F::from_f64(rng.normal()))
            .collect()
    }
}
