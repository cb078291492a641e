//! The context of a pass over a planned model: its nodes and where the
//! current batch's buffers of each node are ([`Ctx`]). The passes
//! ([`super::pass`]) and each layer's maths read it.

use super::{Layout, Node, Ref, Slot, Train};
use crate::ops::{Loc, Mem};
use crate::serial::act::Act;

/// The nodes of a model and the workspace layout of the current pass:
/// where every node's buffers are.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'m> {
    /// The nodes.
    pub nodes: &'m [Node],
    /// The layout for this batch size.
    pub lay: Layout,
}

impl<'m> Ctx<'m> {
    /// Batch size.
    #[inline]
    pub fn b(&self) -> usize {
        self.lay.b
    }

    /// Where node `n`'s value lives.
    #[inline]
    pub fn val(&self, n: &Node) -> Loc {
        match n.val {
            Slot::Input => Loc::new(Mem::X, 0),
            Slot::Ws(o) => Loc::new(Mem::Ws, self.lay.vals + self.lay.b * o),
        }
    }

    /// Where node `n`'s delta lives (only active nodes have one, and
    /// they never sit on the network input).
    #[inline]
    pub fn dlt(&self, n: &Node) -> Loc {
        match n.val {
            Slot::Ws(o) => Loc::new(Mem::Ws, self.lay.dlt + self.lay.b * o),
            Slot::Input => Loc::new(Mem::X, 0),
        }
    }

    /// Where node `n`'s R-value lives.
    #[inline]
    pub fn rv(&self, n: &Node) -> Loc {
        Loc::new(Mem::Ws, self.lay.rv + self.lay.b * n.rval)
    }

    /// Where node `n`'s R-delta lives (the delta layout).
    #[inline]
    pub fn rd(&self, n: &Node) -> Loc {
        match n.val {
            Slot::Ws(o) => Loc::new(Mem::Ws, self.lay.rd + self.lay.b * o),
            Slot::Input => Loc::new(Mem::X, 0),
        }
    }

    /// The node a reference points to (`None` for the network input).
    #[inline]
    pub fn node(&self, r: Ref) -> Option<&'m Node> {
        match r {
            Ref::Input => None,
            Ref::Node(j) => self.nodes.get(j),
        }
    }

    /// The value a reference points to.
    #[inline]
    pub fn value_of(&self, r: Ref) -> Loc {
        match self.node(r) {
            Some(n) => self.val(n),
            None => Loc::new(Mem::X, 0),
        }
    }

    /// Node `n`'s input node, when that input depends on θ.
    #[inline]
    pub fn active_input(&self, n: &Node) -> Option<&'m Node> {
        self.node(n.input).filter(|m| m.active)
    }

    /// Entry `k·C` of node `n`'s fixed scratch (C = its input channels).
    #[inline]
    pub fn ext(&self, n: &Node, k: usize) -> Loc {
        Loc::new(Mem::Ws, self.lay.ext + n.ext + k * n.in_dims.c)
    }

    /// Entry `k·C` of node `n`'s fixed R-pass scratch.
    #[inline]
    pub fn ext_hvp(&self, n: &Node, k: usize) -> Loc {
        Loc::new(Mem::Ws, self.lay.ext_hvp + n.ext_hvp + k * n.in_dims.c)
    }

    /// Where node `n` reads its parameter block at `off` (0: the weight,
    /// or batch norm's γ and β; the weight's length: the bias): in θ when
    /// it is trained, in the frozen parameters when not.
    #[inline]
    pub fn theta(&self, n: &Node, off: usize) -> Loc {
        match n.train {
            Train::All => Loc::new(Mem::Theta, n.param_off + off),
            Train::Bias if off > 0 => Loc::new(Mem::Theta, n.param_off),
            Train::Bias | Train::Frozen => Loc::new(Mem::Frozen, n.frozen_off + off),
        }
    }

    /// Node `n`'s parameter entry `off` in the parameter-sized memory
    /// `mem` (θ, V or the output vector) of a model whose parameters are
    /// all trained: the R-operator passes, which such models alone run
    /// (see [`crate::net::Net`]'s Hessian-vector products).
    #[inline]
    pub fn param(&self, n: &Node, mem: Mem, off: usize) -> Loc {
        Loc::new(mem, n.param_off + off)
    }

    /// The entry of node `n`'s parameter block at `off` (as for
    /// [`Ctx::theta`]) in the parameter-sized memory `mem` (the direction
    /// V, or the output vector), when that block is trained; `None` for a
    /// frozen block, which has no gradient, direction or output.
    #[inline]
    pub fn trained(&self, n: &Node, mem: Mem, off: usize) -> Option<Loc> {
        match n.train {
            Train::All => Some(Loc::new(mem, n.param_off + off)),
            Train::Bias if off > 0 => Some(Loc::new(mem, n.param_off)),
            Train::Bias | Train::Frozen => None,
        }
    }

    /// The activation fused into node `n`'s forward (identity if none).
    #[inline]
    pub fn fused(&self, n: &Node) -> Act {
        n.fuse.unwrap_or(Act::Identity)
    }
}
