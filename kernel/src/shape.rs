//! Model shapes: an MLP of 1 to [`MAX_LAYERS`] dense layers.
//!
//! A [`Shape`] is plain data with `const fn` sizes, so the same description
//! serves a fixed-size model (array lengths computed at compile time) and a
//! run-time-shaped model (`--model 784-512-512-10` on the host).
//!
//! Parameter layout (θ as one flat vector), layer by layer:
//! `W₁ (n₁ × n₀, row-major, PyTorch's [out, in]), b₁ (n₁), W₂, b₂, …`.
//! This is the order of a PyTorch `nn.Sequential` of `Linear` layers.

use crate::error::Error;
use crate::loss::Loss;
use crate::serial::act::Act;

/// Largest number of dense layers an MLP may have.
pub const MAX_LAYERS: usize = 4;

/// The shape of an MLP: widths `n₀ (inputs), n₁, …, n_L (outputs)`, the
/// activation of the hidden layers (the output layer is linear: logits),
/// and the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    dims: [usize; MAX_LAYERS + 1],
    layers: usize,
    /// Activation of every hidden layer.
    pub act: Act,
    /// Loss on the outputs.
    pub loss: Loss,
}

impl Shape {
    /// Builds a shape from widths `[n₀, …, n_L]` (2 to `MAX_LAYERS + 1`
    /// entries, all non-zero).
    pub const fn try_new(dims: &[usize], act: Act, loss: Loss) -> Result<Shape, Error> {
        if dims.len() < 2 || dims.len() > MAX_LAYERS + 1 {
            return Err(Error::BadShape);
        }
        let mut d = [0usize; MAX_LAYERS + 1];
        let mut i = 0;
        while i < dims.len() {
            if dims[i] == 0 {
                return Err(Error::BadShape);
            }
            d[i] = dims[i];
            i += 1;
        }
        Ok(Shape {
            dims: d,
            layers: dims.len() - 1,
            act,
            loss,
        })
    }

    /// Like [`Shape::try_new`], for `const` items: an invalid shape is a
    /// compile-time error there (and a panic if called at run time, so use
    /// `try_new` for shapes that come from input).
    pub const fn new(dims: &[usize], act: Act, loss: Loss) -> Shape {
        match Shape::try_new(dims, act, loss) {
            Ok(s) => s,
            Err(_) => panic!("invalid MLP shape: 2..=5 non-zero widths required"),
        }
    }

    /// Number of dense layers L.
    pub const fn layers(&self) -> usize {
        self.layers
    }

    /// Width of layer `l` (0 = inputs, L = outputs).
    pub const fn dim(&self, l: usize) -> usize {
        self.dims[l]
    }

    /// Widths `[n₀, …, n_L]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..=self.layers]
    }

    /// Number of inputs n₀.
    pub const fn inputs(&self) -> usize {
        self.dims[0]
    }

    /// Number of outputs n_L.
    pub const fn outputs(&self) -> usize {
        self.dims[self.layers]
    }

    /// Activation of layer `l` (1-based): the hidden activation, identity
    /// for the output layer.
    pub const fn act_of(&self, l: usize) -> Act {
        if l == self.layers {
            Act::Identity
        } else {
            self.act
        }
    }

    /// Number of parameters P = Σ n_l·(n_{l−1} + 1).
    pub const fn param_count(&self) -> usize {
        let mut p = 0;
        let mut l = 1;
        while l <= self.layers {
            p += self.dims[l] * (self.dims[l - 1] + 1);
            l += 1;
        }
        p
    }

    /// Offset of `W_l` (1-based layer) in θ; `b_l` follows it at
    /// `weight_offset(l) + n_l·n_{l−1}`.
    pub const fn weight_offset(&self, l: usize) -> usize {
        let mut p = 0;
        let mut j = 1;
        while j < l {
            p += self.dims[j] * (self.dims[j - 1] + 1);
            j += 1;
        }
        p
    }

    /// N = n₁ + … + n_L: units whose values one sample keeps per buffer.
    pub const fn units(&self) -> usize {
        let mut n = 0;
        let mut l = 1;
        while l <= self.layers {
            n += self.dims[l];
            l += 1;
        }
        n
    }

    /// Offset of layer `l`'s (1-based) values in a per-layer buffer of a
    /// batch of `batch` samples: `batch · (n₁ + … + n_{l−1})`.
    pub const fn unit_offset(&self, l: usize, batch: usize) -> usize {
        let mut n = 0;
        let mut j = 1;
        while j < l {
            n += self.dims[j];
            j += 1;
        }
        n * batch
    }

    /// Workspace length (in scalars) for a batch of `batch` samples:
    /// `2·B·N` for loss and gradient (activations and deltas), `5·B·N` when
    /// Hessian-vector products are needed (adds R{z}, R{a}, R{δ}).
    pub const fn workspace_len(&self, batch: usize, hvp: bool) -> usize {
        let per = batch * self.units();
        if hvp {
            5 * per
        } else {
            2 * per
        }
    }

    /// Multiply-adds of one forward pass per sample: Σ n_l·n_{l−1}.
    pub const fn macs(&self) -> usize {
        let mut m = 0;
        let mut l = 1;
        while l <= self.layers {
            m += self.dims[l] * self.dims[l - 1];
            l += 1;
        }
        m
    }
}

impl core::fmt::Display for Shape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, d) in self.dims().iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        const S: Shape = Shape::new(&[64, 32, 10], Act::Tanh, Loss::SoftmaxCe);
        const P: usize = S.param_count();
        assert_eq!(P, 64 * 32 + 32 + 32 * 10 + 10);
        assert_eq!(S.weight_offset(1), 0);
        assert_eq!(S.weight_offset(2), 64 * 32 + 32);
        assert_eq!(S.units(), 42);
        assert_eq!(S.unit_offset(2, 3), 96);
        assert_eq!(S.workspace_len(2, false), 2 * 2 * 42);
        assert_eq!(S.act_of(1), Act::Tanh);
        assert_eq!(S.act_of(2), Act::Identity);
    }

    #[test]
    fn bad_shapes() {
        assert_eq!(
            Shape::try_new(&[3], Act::Relu, Loss::Mse),
            Err(Error::BadShape)
        );
        assert_eq!(
            Shape::try_new(&[3, 0, 2], Act::Relu, Loss::Mse),
            Err(Error::BadShape)
        );
        assert_eq!(
            Shape::try_new(&[1, 2, 3, 4, 5, 6], Act::Relu, Loss::Mse),
            Err(Error::BadShape)
        );
    }
}
