//! The MLP objective: forward, backward and the R-operator (exact
//! Hessian-vector product) over slices, written once.
//!
//! [`Mlp`] is generic over where its workspace lives (`S`): a fixed-size
//! array `[F; W]` on a microcontroller ([`FixedMlp`]), or a caller-provided
//! slice / `Vec` on a host. The parameters θ and every other
//! parameter-sized vector are owned by the caller and passed in.
//!
//! Workspace, for a batch of B samples and N = n₁ + … + n_L units:
//! `[ a | δz | R{z} | R{a} | R{δ} ]`, each B·N scalars; the last three only
//! for Hessian-vector products. So RAM = 2·B·N scalars for gradients,
//! 5·B·N for `db` / `hvp` ([`Shape::workspace_len`]).

use crate::act;
use crate::error::{check_len, Error};
use crate::loss::{self, Targets};
use crate::objective::{Exec, Objective, Serial, SliceSpace};
use crate::real::Real;
use crate::shape::Shape;

/// A mini-batch: B inputs of n₀ values each (row-major) and their targets.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, F> {
    /// Inputs, B × n₀.
    pub x: &'a [F],
    /// Targets.
    pub targets: Targets<'a, F>,
}

/// An MLP objective on the current mini-batch.
#[derive(Debug)]
pub struct Mlp<'b, F, E, S> {
    shape: Shape,
    exec: E,
    ws: S,
    batch: Option<(Batch<'b, F>, usize)>,
}

/// A fixed-size MLP objective: the serial executor and a workspace of `W`
/// scalars held inline (e.g. in a `static`). Pick
/// `W = SHAPE.workspace_len(B, hvp)` in a `const`.
pub type FixedMlp<'b, F, const W: usize> = Mlp<'b, F, Serial, [F; W]>;

impl<'b, F: Real, const W: usize> Mlp<'b, F, Serial, [F; W]> {
    /// A fixed-size objective for `shape`; fails unless `W` holds at least
    /// the gradient workspace of one sample.
    pub fn fixed(shape: Shape) -> Result<Self, Error> {
        if W < shape.workspace_len(1, false) {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: shape.workspace_len(1, false),
                got: W,
            });
        }
        Ok(Mlp {
            shape,
            exec: Serial,
            ws: [F::ZERO; W],
            batch: None,
        })
    }
}

impl<'b, F: Real, E: Exec<F>, S: AsMut<[F]> + AsRef<[F]>> Mlp<'b, F, E, S> {
    /// An objective for `shape` executing with `exec`, with workspace `ws`.
    pub fn new(shape: Shape, exec: E, ws: S) -> Self {
        Mlp {
            shape,
            exec,
            ws,
            batch: None,
        }
    }

    /// The model shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The executor.
    pub fn exec_mut(&mut self) -> &mut E {
        &mut self.exec
    }

    /// Largest batch the workspace holds (with or without HVP buffers).
    pub fn capacity(&self, hvp: bool) -> usize {
        self.ws.as_ref().len() / self.shape.workspace_len(1, hvp)
    }

    /// Sets the mini-batch every following call works on. Checks sizes and
    /// labels; the batch must fit the workspace (see [`Mlp::capacity`]).
    pub fn set_batch(&mut self, x: &'b [F], targets: Targets<'b, F>) -> Result<(), Error> {
        let n0 = self.shape.inputs();
        let b = x.len() / n0;
        if b == 0 || b * n0 != x.len() {
            return Err(Error::ShapeMismatch {
                what: "batch inputs",
                expected: n0 * b.max(1),
                got: x.len(),
            });
        }
        loss::check_targets(self.shape.loss, &targets, b, self.shape.outputs())?;
        if b > self.capacity(false) {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: self.shape.workspace_len(b, false),
                got: self.ws.as_ref().len(),
            });
        }
        self.batch = Some((Batch { x, targets }, b));
        Ok(())
    }

    /// Number of samples in the current batch (0 if none).
    pub fn batch_len(&self) -> usize {
        self.batch.map_or(0, |(_, b)| b)
    }

    /// Runs the forward pass at θ and returns the outputs (B × n_L).
    pub fn forward_outputs(&mut self, theta: &[F]) -> Result<&[F], Error> {
        let (batch, b) = self.batch.ok_or(Error::NoBatch)?;
        check_len("theta", self.shape.param_count(), theta.len())?;
        let s = self.shape;
        let per = b * s.units();
        let acts = &mut self.ws.as_mut()[..per];
        forward(&s, &mut self.exec, theta, batch.x, b, acts);
        let off = s.unit_offset(s.layers(), b);
        Ok(&self.ws.as_ref()[off..off + b * s.outputs()])
    }

    fn ready(&self, theta: &[F], hvp: bool) -> Result<(Batch<'b, F>, usize), Error> {
        let (batch, b) = self.batch.ok_or(Error::NoBatch)?;
        check_len("theta", self.shape.param_count(), theta.len())?;
        let need = self.shape.workspace_len(b, hvp);
        if self.ws.as_ref().len() < need {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: need,
                got: self.ws.as_ref().len(),
            });
        }
        Ok((batch, b))
    }

    /// Forward pass, loss, δ at the outputs and the backward pass, writing
    /// grad ← β·grad + α·∇L when `grad` is given. Leaves a and δz of every
    /// layer in the workspace (the R-operator reuses them).
    fn fwd_bwd(
        &mut self,
        theta: &[F],
        grad: Option<(&mut [F], F, F)>,
        batch: Batch<'_, F>,
        b: usize,
    ) -> F {
        let s = self.shape;
        let per = b * s.units();
        let (acts, rest) = self.ws.as_mut().split_at_mut(per);
        let deltas = &mut rest[..per];
        forward(&s, &mut self.exec, theta, batch.x, b, acts);
        let l = s.layers();
        let off = s.unit_offset(l, b);
        let len = b * s.outputs();
        let out = &acts[off..off + len];
        let dl = &mut deltas[off..off + len];
        let loss = loss::loss_grad(s.loss, out, &batch.targets, s.outputs(), Some(&mut *dl));
        act::act_backward(dl, out, s.act_of(l));
        backward(&s, &mut self.exec, theta, batch.x, b, acts, deltas, grad);
        loss
    }

    /// The R-pass after [`Mlp::fwd_bwd`]: out ← β·out + α·H·v (v read from
    /// `out` itself when `v` is None).
    #[allow(clippy::too_many_arguments)]
    fn rpass(
        &mut self,
        theta: &[F],
        v: Option<&[F]>,
        out: &mut [F],
        alpha: F,
        beta: F,
        b: usize,
        x: &[F],
    ) {
        let s = self.shape;
        let per = b * s.units();
        let ws = self.ws.as_mut();
        let (acts, rest) = ws.split_at_mut(per);
        let (deltas, rest) = rest.split_at_mut(per);
        let (rz, rest) = rest.split_at_mut(per);
        let (ra, rest) = rest.split_at_mut(per);
        let rd = &mut rest[..per];
        let bufs = RBufs {
            acts,
            deltas,
            rz,
            ra,
            rd,
        };
        r_pass(&s, &mut self.exec, theta, x, b, bufs, v, out, alpha, beta);
    }
}

impl<F: Real, E: Exec<F>, S> SliceSpace<F> for Mlp<'_, F, E, S> {
    type E = E;
    fn exec(&mut self) -> &mut E {
        &mut self.exec
    }
}

impl<'b, F: Real, E: Exec<F>, S: AsMut<[F]> + AsRef<[F]>> Objective<F> for Mlp<'b, F, E, S> {
    fn param_count(&self) -> usize {
        self.shape.param_count()
    }

    fn loss_grad(&mut self, theta: &[F], grad: &mut [F], alpha: F, beta: F) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, false)?;
        check_len("gradient", self.shape.param_count(), grad.len())?;
        Ok(self.fwd_bwd(theta, Some((grad, alpha, beta)), batch, b))
    }

    /// Costs one gradient plus one R-pass that reuses the forward and
    /// backward values: per hidden layer 9 matrix products (3 + 6); the
    /// input layer needs 4, since R{a₀} = 0.
    fn loss_grad_gr(&mut self, theta: &[F], d: &mut [F], gamma: F) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, true)?;
        check_len("direction", self.shape.param_count(), d.len())?;
        let loss = self.fwd_bwd(theta, Some((&mut *d, F::ONE, F::ZERO)), batch, b);
        self.rpass(theta, None, d, gamma, F::ONE, b, batch.x);
        Ok(loss)
    }

    fn hvp(&mut self, theta: &[F], v: &[F], out: &mut [F]) -> Result<(), Error> {
        let (batch, b) = self.ready(theta, true)?;
        check_len("v", self.shape.param_count(), v.len())?;
        check_len("hvp output", self.shape.param_count(), out.len())?;
        self.fwd_bwd(theta, None, batch, b);
        self.rpass(theta, Some(v), out, F::ONE, F::ZERO, b, batch.x);
        Ok(())
    }

    fn loss(&mut self, theta: &[F]) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, false)?;
        let s = self.shape;
        let acts = &mut self.ws.as_mut()[..b * s.units()];
        forward(&s, &mut self.exec, theta, batch.x, b, acts);
        let off = s.unit_offset(s.layers(), b);
        let out = &acts[off..off + b * s.outputs()];
        Ok(loss::loss_grad(
            s.loss,
            out,
            &batch.targets,
            s.outputs(),
            None,
        ))
    }
}

/// (W_l, b_l) of layer `l` (1-based) in a parameter-sized vector.
#[inline]
pub fn layer<'a, F>(s: &Shape, theta: &'a [F], l: usize) -> (&'a [F], &'a [F]) {
    let o = s.weight_offset(l);
    let nw = s.dim(l) * s.dim(l - 1);
    let (w, rest) = theta[o..].split_at(nw);
    (w, &rest[..s.dim(l)])
}

#[inline]
fn layer_mut<'a, F>(s: &Shape, theta: &'a mut [F], l: usize) -> (&'a mut [F], &'a mut [F]) {
    let o = s.weight_offset(l);
    let nw = s.dim(l) * s.dim(l - 1);
    let (w, rest) = theta[o..].split_at_mut(nw);
    (w, &mut rest[..s.dim(l)])
}

/// Layer `l`'s block (B × n_l) of a per-layer buffer.
#[inline]
fn blk<'a, F>(s: &Shape, buf: &'a [F], l: usize, b: usize) -> &'a [F] {
    let o = s.unit_offset(l, b);
    &buf[o..o + b * s.dim(l)]
}

#[inline]
fn blk_mut<'a, F>(s: &Shape, buf: &'a mut [F], l: usize, b: usize) -> &'a mut [F] {
    let o = s.unit_offset(l, b);
    &mut buf[o..o + b * s.dim(l)]
}

/// Layer `l−1`'s block (mutable) and layer `l`'s block (shared) of one
/// per-layer buffer, for l ≥ 2.
#[inline]
fn blk_pair<'a, F>(s: &Shape, buf: &'a mut [F], l: usize, b: usize) -> (&'a mut [F], &'a [F]) {
    let (lo, hi) = buf.split_at_mut(s.unit_offset(l, b));
    let prev = &mut lo[s.unit_offset(l - 1, b)..];
    (prev, &hi[..b * s.dim(l)])
}

/// The input of layer `l`: x for l = 1, else a_{l−1}.
#[inline]
fn input<'a, F>(s: &Shape, x: &'a [F], acts: &'a [F], l: usize, b: usize) -> &'a [F] {
    if l == 1 {
        x
    } else {
        blk(s, acts, l - 1, b)
    }
}

/// Forward pass: a_l = σ_l(a_{l−1}·W_lᵀ + b_l) for l = 1..L, into `acts`.
pub fn forward<F: Real, E: Exec<F>>(
    s: &Shape,
    e: &mut E,
    theta: &[F],
    x: &[F],
    b: usize,
    acts: &mut [F],
) {
    for l in 1..=s.layers() {
        let (w, bias) = layer(s, theta, l);
        let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
        let (lo, hi) = acts.split_at_mut(s.unit_offset(l, b));
        let a_in: &[F] = if l == 1 {
            x
        } else {
            &lo[s.unit_offset(l - 1, b)..]
        };
        let z = &mut hi[..b * n_out];
        e.gemm(false, true, b, n_out, n_in, F::ONE, a_in, w, F::ZERO, z);
        act::bias_act(z, bias, s.act_of(l));
    }
}

/// Backward pass from δz_L (in `deltas`, layer L) down to layer 1, filling
/// δz_l of every layer and, when `grad` = (g, α, β) is given,
/// g ← β·g + α·∇L.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Real, E: Exec<F>>(
    s: &Shape,
    e: &mut E,
    theta: &[F],
    x: &[F],
    b: usize,
    acts: &[F],
    deltas: &mut [F],
    mut grad: Option<(&mut [F], F, F)>,
) {
    for l in (1..=s.layers()).rev() {
        let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
        let a_in = input(s, x, acts, l, b);
        if let Some((g, alpha, beta)) = grad.as_mut() {
            let (gw, gb) = layer_mut(s, g, l);
            let dz = blk(s, deltas, l, b);
            e.gemm(true, false, n_out, n_in, b, *alpha, dz, a_in, *beta, gw);
            act::col_sum(gb, dz, *alpha, *beta);
        }
        if l > 1 {
            let (w, _) = layer(s, theta, l);
            let (prev, dz) = blk_pair(s, deltas, l, b);
            e.gemm(false, false, b, n_in, n_out, F::ONE, dz, w, F::ZERO, prev);
            act::act_backward(prev, blk(s, acts, l - 1, b), s.act_of(l - 1));
        }
    }
}

/// Workspace blocks of the R-pass.
pub struct RBufs<'a, F> {
    /// a_l (from the forward pass).
    pub acts: &'a [F],
    /// δz_l (from the backward pass).
    pub deltas: &'a [F],
    /// R{z_l}.
    pub rz: &'a mut [F],
    /// R{a_l}.
    pub ra: &'a mut [F],
    /// R{δa_l}, then R{δz_l}.
    pub rd: &'a mut [F],
}

/// Pearlmutter's R-operator: the directional derivative along v of the
/// forward and backward passes, giving out ← β·out + α·H·v exactly.
///
/// R-forward: R{z_l} = a_{l−1}·V_lᵀ + R{a_{l−1}}·W_lᵀ + v_b, R{a_l} = σ'·R{z_l}
/// (R{a₀} = 0). R-backward: R{δa_L} = H_loss·R{a_L};
/// R{δz_l} = κ·R{z_l}⊙δz_l + σ'⊙R{δa_l};
/// R{∇W_l} = R{δz_l}ᵀ·a_{l−1} + δz_lᵀ·R{a_{l−1}}; R{∇b_l} = Σ R{δz_l};
/// R{δa_{l−1}} = δz_l·V_l + R{δz_l}·W_l.
///
/// When `v` is `None`, v is read from `out` (in place: d ← d + γ·H·d for
/// `db`). That is safe because each V_l is last read before out_l is
/// written.
#[allow(clippy::too_many_arguments)]
pub fn r_pass<F: Real, E: Exec<F>>(
    s: &Shape,
    e: &mut E,
    theta: &[F],
    x: &[F],
    b: usize,
    bufs: RBufs<'_, F>,
    v: Option<&[F]>,
    out: &mut [F],
    alpha: F,
    beta: F,
) {
    let RBufs {
        acts,
        deltas,
        rz,
        ra,
        rd,
    } = bufs;
    let nl = s.layers();
    // R-forward.
    for l in 1..=nl {
        let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
        let a_in = input(s, x, acts, l, b);
        let rzl = blk_mut(s, rz, l, b);
        {
            let vsrc: &[F] = match v {
                Some(v) => v,
                None => &*out,
            };
            let (vw, vb) = layer(s, vsrc, l);
            e.gemm(false, true, b, n_out, n_in, F::ONE, a_in, vw, F::ZERO, rzl);
            if l > 1 {
                let (w, _) = layer(s, theta, l);
                e.gemm(
                    false,
                    true,
                    b,
                    n_out,
                    n_in,
                    F::ONE,
                    blk(s, ra, l - 1, b),
                    w,
                    F::ONE,
                    rzl,
                );
            }
            act::bias_add(rzl, vb);
        }
        let act_l = s.act_of(l);
        let ral = blk_mut(s, ra, l, b);
        act::r_act(ral, blk(s, rz, l, b), blk(s, acts, l, b), act_l);
    }
    // R-backward: the loss Hessian at the outputs.
    {
        let rdl = blk_mut(s, rd, nl, b);
        loss::loss_hvp(
            s.loss,
            blk(s, acts, nl, b),
            s.outputs(),
            blk(s, ra, nl, b),
            rdl,
        );
        act::r_act_backward(
            rdl,
            blk(s, rz, nl, b),
            blk(s, acts, nl, b),
            blk(s, deltas, nl, b),
            s.act_of(nl),
        );
    }
    for l in (1..=nl).rev() {
        let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
        let dz = blk(s, deltas, l, b);
        if l > 1 {
            let vsrc: &[F] = match v {
                Some(v) => v,
                None => &*out,
            };
            let (vw, _) = layer(s, vsrc, l);
            let (w, _) = layer(s, theta, l);
            let (prev, rdz) = blk_pair(s, rd, l, b);
            e.gemm(false, false, b, n_in, n_out, F::ONE, dz, vw, F::ZERO, prev);
            e.gemm(false, false, b, n_in, n_out, F::ONE, rdz, w, F::ONE, prev);
            act::r_act_backward(
                prev,
                blk(s, rz, l - 1, b),
                blk(s, acts, l - 1, b),
                blk(s, deltas, l - 1, b),
                s.act_of(l - 1),
            );
        }
        let rdz = blk(s, rd, l, b);
        let a_in = input(s, x, acts, l, b);
        let (ow, ob) = layer_mut(s, out, l);
        e.gemm(true, false, n_out, n_in, b, alpha, rdz, a_in, beta, ow);
        if l > 1 {
            e.gemm(
                true,
                false,
                n_out,
                n_in,
                b,
                alpha,
                dz,
                blk(s, ra, l - 1, b),
                F::ONE,
                ow,
            );
        }
        act::col_sum(ob, rdz, alpha, beta);
    }
}

/// Accuracy helper: number of rows of `out` (B × k) whose arg-max equals the
/// class label.
pub fn correct<F: Real>(out: &[F], k: usize, labels: &[u32]) -> usize {
    out.chunks_exact(k)
        .zip(labels)
        .filter(|(z, &y)| loss::argmax(z) == y as usize)
        .count()
}
