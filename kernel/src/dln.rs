//! The diagonal linear network of the paper (its solvable model):
//! f(x) = ⟨β, x⟩ with β = u⊙u − v⊙v, θ = (u, v) ∈ R^{2d}, and the loss
//! L = (1/2n)·‖Xβ − y‖² on n samples.
//!
//! It is just another [`Objective`], so its experiments run through the
//! same method functions as the MLPs.
//!
//! Gradient, with r = Xβ − y and g_β = Xᵀr/n:
//! ∇_u L = 2u⊙g_β, ∇_v L = −2v⊙g_β.
//! Hessian-vector product along (a, c), with R{β} = 2u⊙a − 2v⊙c and
//! R{g_β} = XᵀX·R{β}/n:
//! H(a,c)_u = 2a⊙g_β + 2u⊙R{g_β}, H(a,c)_v = −2c⊙g_β − 2v⊙R{g_β}.

use crate::error::{check_len, Error};
use crate::objective::{Exec, Objective, Pass, Serial, SliceSpace};
use crate::real::Real;

/// A DLN objective on data X (n × d, row-major) and y (n), with a
/// caller-provided workspace of [`Dln::workspace_len`] scalars.
pub struct Dln<'a, F, E = Serial> {
    x: &'a [F],
    y: &'a [F],
    n: usize,
    d: usize,
    ws: &'a mut [F],
    exec: E,
}

impl<'a, F: Real> Dln<'a, F, Serial> {
    /// A DLN on X (n × d) and y (n) with the serial executor.
    pub fn new(x: &'a [F], y: &'a [F], d: usize, ws: &'a mut [F]) -> Result<Self, Error> {
        Dln::with_exec(x, y, d, ws, Serial)
    }
}

impl<'a, F: Real, E: Exec<F>> Dln<'a, F, E> {
    /// Workspace needed for n samples in dimension d: 4d + 2n scalars.
    pub const fn workspace_len(n: usize, d: usize) -> usize {
        4 * d + 2 * n
    }

    /// A DLN with a given executor.
    pub fn with_exec(
        x: &'a [F],
        y: &'a [F],
        d: usize,
        ws: &'a mut [F],
        exec: E,
    ) -> Result<Self, Error> {
        let n = y.len();
        if d == 0 || n == 0 {
            return Err(Error::BadShape);
        }
        check_len("X", n * d, x.len())?;
        if ws.len() < Self::workspace_len(n, d) {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: Self::workspace_len(n, d),
                got: ws.len(),
            });
        }
        Ok(Dln {
            x,
            y,
            n,
            d,
            ws,
            exec,
        })
    }

    /// Dimension d (θ has 2d entries).
    pub fn dim(&self) -> usize {
        self.d
    }

    /// β = u⊙u − v⊙v of θ = (u, v).
    pub fn beta(theta: &[F], out: &mut [F]) {
        let d = theta.len() / 2;
        let (u, v) = theta.split_at(d);
        for ((b, u), v) in out.iter_mut().zip(u).zip(v) {
            *b = *u * *u - *v * *v;
        }
    }

    /// Computes β, r = Xβ − y and g_β = Xᵀr/n into the workspace; returns L.
    fn residual(&mut self, theta: &[F]) -> F {
        let (n, d) = (self.n, self.d);
        let (beta, rest) = self.ws.split_at_mut(d);
        let (r, rest) = rest.split_at_mut(n);
        let gb = &mut rest[..d];
        Self::beta(theta, beta);
        self.exec
            .gemm(false, true, n, 1, d, F::ONE, self.x, beta, F::ZERO, r);
        let mut l = F::ZERO;
        for (ri, yi) in r.iter_mut().zip(self.y) {
            *ri -= *yi;
            l += *ri * *ri;
        }
        let inv_n = F::ONE / F::from_usize(n);
        self.exec
            .gemm(true, false, d, 1, n, inv_n, self.x, r, F::ZERO, gb);
        l * inv_n / F::TWO
    }

    /// out ← β·out + α·H·w, after [`Dln::residual`]; w read from `out`
    /// when `w` is None (every entry is read before it is written).
    fn hvp_acc(&mut self, theta: &[F], w: Option<&[F]>, out: &mut [F], alpha: F, beta_: F) {
        let (n, d) = (self.n, self.d);
        let (_, rest) = self.ws.split_at_mut(d);
        let (_, rest) = rest.split_at_mut(n);
        let (gb, rest) = rest.split_at_mut(d);
        let (rb, rest) = rest.split_at_mut(d);
        let (rr, rest) = rest.split_at_mut(n);
        let rgb = &mut rest[..d];
        let (u, v) = theta.split_at(d);
        {
            let ws: &[F] = w.unwrap_or(&*out);
            let (a, c) = ws.split_at(d);
            for i in 0..d {
                rb[i] = F::TWO * u[i] * a[i] - F::TWO * v[i] * c[i];
            }
        }
        let inv_n = F::ONE / F::from_usize(n);
        self.exec
            .gemm(false, true, n, 1, d, F::ONE, self.x, rb, F::ZERO, rr);
        self.exec
            .gemm(true, false, d, 1, n, inv_n, self.x, rr, F::ZERO, rgb);
        for i in 0..d {
            let (a, c) = match w {
                Some(w) => (w[i], w[d + i]),
                None => (out[i], out[d + i]),
            };
            let hu = F::TWO * a * gb[i] + F::TWO * u[i] * rgb[i];
            let hv = -(F::TWO * c * gb[i]) - F::TWO * v[i] * rgb[i];
            out[i] = if beta_ == F::ZERO {
                alpha * hu
            } else {
                beta_ * out[i] + alpha * hu
            };
            out[d + i] = if beta_ == F::ZERO {
                alpha * hv
            } else {
                beta_ * out[d + i] + alpha * hv
            };
        }
    }

    fn check(&self, what: &'static str, v: &[F]) -> Result<(), Error> {
        check_len(what, 2 * self.d, v.len())
    }
}

impl<F: Real, E: Exec<F>> SliceSpace<F> for Dln<'_, F, E> {
    type E = E;
    fn exec(&mut self) -> &mut E {
        &mut self.exec
    }
}
crate::slice_vec_space!(impl[F: Real, E: Exec<F>] for Dln<'_, F, E>);

impl<F: Real, E: Exec<F>> Objective<F> for Dln<'_, F, E> {
    fn param_count(&self) -> usize {
        2 * self.d
    }

    fn loss_grad(
        &mut self,
        theta: &[F],
        grad: &mut [F],
        alpha: F,
        beta: F,
        _pass: Pass,
    ) -> Result<F, Error> {
        self.check("theta", theta)?;
        self.check("gradient", grad)?;
        let l = self.residual(theta);
        let d = self.d;
        let gb = &self.ws[d + self.n..2 * d + self.n];
        let (u, v) = theta.split_at(d);
        for i in 0..d {
            let gu = F::TWO * u[i] * gb[i];
            let gv = -(F::TWO * v[i] * gb[i]);
            if beta == F::ZERO {
                grad[i] = alpha * gu;
                grad[d + i] = alpha * gv;
            } else {
                grad[i] = beta * grad[i] + alpha * gu;
                grad[d + i] = beta * grad[d + i] + alpha * gv;
            }
        }
        Ok(l)
    }

    fn loss_grad_gr(&mut self, theta: &[F], d: &mut [F], gamma: F) -> Result<F, Error> {
        let l = self.loss_grad(theta, d, F::ONE, F::ZERO, Pass::Train)?;
        self.hvp_acc(theta, None, d, gamma, F::ONE);
        Ok(l)
    }

    fn hvp(&mut self, theta: &[F], v: &[F], out: &mut [F]) -> Result<(), Error> {
        self.check("theta", theta)?;
        self.check("v", v)?;
        self.check("hvp output", out)?;
        self.residual(theta);
        self.hvp_acc(theta, Some(v), out, F::ONE, F::ZERO);
        Ok(())
    }

    fn loss(&mut self, theta: &[F]) -> Result<F, Error> {
        self.check("theta", theta)?;
        Ok(self.residual(theta))
    }
}
