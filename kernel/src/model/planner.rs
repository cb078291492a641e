//! The planner: a layer list, checked, into nodes (where each layer reads
//! its operands, keeps its value, R-derivative and batch-norm state) and
//! the totals of [`Sizes`]. A `const fn`, so that firmware plans its model
//! at compile time.

use super::*;

const fn resolve(src: Src, i: usize) -> Result<Ref, Error> {
    match src {
        Src::Prev => {
            if i == 0 {
                Ok(Ref::Input)
            } else {
                Ok(Ref::Node(i - 1))
            }
        }
        Src::Input => Ok(Ref::Input),
        Src::Node(j) => {
            if j < i {
                Ok(Ref::Node(j))
            } else {
                Err(Error::BadModel("a layer may only read an earlier layer"))
            }
        }
    }
}

const fn reads(l: &Layer, i: usize, j: usize) -> bool {
    let direct = match resolve(l.src, i) {
        Ok(Ref::Node(k)) => k == j,
        _ => false,
    };
    let other = match l.op {
        Op::Add { other } => other == j,
        _ => false,
    };
    direct || other
}

/// Consumers of layer `j`'s output among `layers` (an `Add` of a node to
/// itself counts twice).
const fn consumers(layers: &[Layer], j: usize) -> usize {
    let mut n = 0;
    let mut i = j + 1;
    while i < layers.len() {
        let l = &layers[i];
        let direct = matches!(resolve(l.src, i), Ok(Ref::Node(k)) if k == j);
        let other = matches!(l.op, Op::Add { other } if other == j);
        n += direct as usize + other as usize;
        i += 1;
    }
    n
}

/// Whether a consumer after layer `i` (in list order) reads `j`: then
/// layer `i`'s backward accumulates into `j`'s delta (the backward pass
/// visits later layers first, and the first one to write overwrites).
const fn read_after(layers: &[Layer], i: usize, j: usize) -> bool {
    let mut k = i + 1;
    while k < layers.len() {
        if reads(&layers[k], k, j) {
            return true;
        }
        k += 1;
    }
    false
}

/// Plans `layers` on inputs of shape `input` into `nodes` (one node per
/// layer; `nodes.len()` must equal `layers.len()`); returns the totals.
///
/// Fails with [`Error::BadModel`] naming the problem: an empty list, a
/// layer reading a later one, shapes that do not fit (a linear layer on a
/// spatial input, a kernel larger than its padded input, channels not
/// divisible by the groups, an `Add` of two different shapes).
pub const fn plan(layers: &[Layer], input: Dims, nodes: &mut [Node]) -> Result<Sizes, Error> {
    tri!(check_plan_args(layers, input, nodes));
    let mut s = Sizes {
        params: 0,
        all_params: 0,
        state: 0,
        vals: 0,
        rvals: 0,
        ext: 0,
        ext_hvp: 0,
        macs: 0,
        batch_norms: 0,
    };
    let mut i = 0;
    while i < layers.len() {
        let l = layers[i];
        if i + 1 < layers.len() && consumers(layers, i) == 0 {
            return Err(Error::BadModel(
                "a layer's output is used by no later layer",
            ));
        }
        let ops = tri!(operands(layers, i, input, nodes));
        let out = ops.out_dims;
        let np = tri!(checked_param_len(&l.op, ops.in_dims));
        let bias_len = match l.op {
            Op::Linear { out, bias: true }
            | Op::Conv2d {
                out, bias: true, ..
            } => out,
            _ => 0,
        };
        let train = match l.train {
            Train::Bias if bias_len == 0 => Train::Frozen,
            t => t,
        };
        let trained = match train {
            Train::All => np,
            Train::Bias => bias_len,
            Train::Frozen => 0,
        };
        let mut n = Node::EMPTY;
        n.op = l.op;
        n.input = ops.input;
        n.other = ops.other;
        n.in_dims = ops.in_dims;
        n.out_dims = out;
        n.param_off = s.params;
        n.param_len = trained;
        n.train = train;
        n.frozen_off = s.all_params;
        n.all_len = np;
        n.active = trained > 0 || ops.in_active || ops.other_active;
        n.acc_in = match ops.input {
            Ref::Node(j) => read_after(layers, i, j),
            Ref::Input => false,
        };
        n.acc_other = match ops.other {
            Ref::Node(j) => read_after(layers, i, j) || matches!(ops.input, Ref::Node(k) if k == j),
            Ref::Input => false,
        };
        s.params = tri!(cadd(s.params, trained));
        s.all_params = tri!(cadd(s.all_params, np));
        s.macs = s.macs.saturating_add(macs(&l.op, ops.in_dims, out));
        tri!(place(layers, i, ops.in_slot, nodes, &mut n, &mut s));
        nodes[i] = n;
        i += 1;
    }
    // the workspace of one sample (with the R-pass) must be addressable,
    // so that the host can size larger batches with checked arithmetic
    if checked_workspace_len(&s, 1, true).is_none() {
        return Err(TOO_LARGE);
    }
    Ok(s)
}

/// [`plan`]'s arguments, checked before any layer.
const fn check_plan_args(layers: &[Layer], input: Dims, nodes: &[Node]) -> Result<(), Error> {
    if layers.is_empty() {
        return Err(Error::BadModel("the model has no layers"));
    }
    if nodes.len() != layers.len() {
        return Err(Error::BadModel("node storage must hold one node per layer"));
    }
    if input.is_empty() {
        return Err(Error::BadModel("empty input shape"));
    }
    if input.checked_len().is_none() {
        return Err(TOO_LARGE);
    }
    Ok(())
}

/// What layer `i` reads, as [`plan`] finds it in the nodes planned so far.
#[derive(Clone, Copy)]
struct Operands {
    /// Its input.
    input: Ref,
    /// The input's shape.
    in_dims: Dims,
    /// Whether the input depends on trained parameters.
    in_active: bool,
    /// Where the input's value lives.
    in_slot: Slot,
    /// The layer's output shape.
    out_dims: Dims,
    /// `Add`'s other operand (`Ref::Input` for other layers).
    other: Ref,
    /// Whether the other operand depends on trained parameters.
    other_active: bool,
}

/// Layer `i`'s operands and output shape, checked: an earlier layer or
/// the input, a shape the layer takes, `Add`'s other operand an earlier
/// layer of the same shape, and the layer kinds of the `conv` feature only
/// with it.
const fn operands(
    layers: &[Layer],
    i: usize,
    input: Dims,
    nodes: &[Node],
) -> Result<Operands, Error> {
    let l = layers[i];
    let input_ref = tri!(resolve(l.src, i));
    let (in_dims, in_active, in_slot) = match input_ref {
        Ref::Input => (input, false, Slot::Input),
        Ref::Node(j) => (nodes[j].out_dims, nodes[j].active, nodes[j].val),
    };
    let out_dims = tri!(out_dims(&l.op, in_dims));
    let mut other = Ref::Input;
    let mut other_active = false;
    if let Op::Add { other: j } = l.op {
        if j >= i {
            return Err(Error::BadModel(
                "add: the other operand must be an earlier layer",
            ));
        }
        if nodes[j].out_dims.c != in_dims.c
            || nodes[j].out_dims.h != in_dims.h
            || nodes[j].out_dims.w != in_dims.w
        {
            return Err(Error::BadModel("add: the two operands differ in shape"));
        }
        other = Ref::Node(j);
        other_active = nodes[j].active;
    }
    if !cfg!(feature = "conv") && l.op.needs_conv() {
        return Err(Error::BadModel(
            "convolution, batch norm and pooling need fdgr-kernel's `conv` feature",
        ));
    }
    Ok(Operands {
        input: input_ref,
        in_dims,
        in_active,
        in_slot,
        out_dims,
        other,
        other_active,
    })
}

/// Where node `n` (layer `i`, its input's value at `in_slot`) keeps its
/// value, its R-derivative and its batch-norm state and scratch, counted
/// into `s`. An activation after a layer that does not need its own
/// output runs in place (fused into a linear, convolution or batch-norm
/// layer); a `Flatten` whose input feeds nothing else is a view.
const fn place(
    layers: &[Layer],
    i: usize,
    in_slot: Slot,
    nodes: &mut [Node],
    n: &mut Node,
    s: &mut Sizes,
) -> Result<(), Error> {
    let l = layers[i];
    let input_ref = n.input;
    let (in_dims, out) = (n.in_dims, n.out_dims);
    let mut own = true;
    match l.op {
        Op::Flatten => {
            // a view of its input, unless the input feeds other
            // layers too (their deltas would then share a buffer
            // that two groups of consumers write): then a copy
            let alone = match input_ref {
                Ref::Input => true,
                Ref::Node(j) => consumers(layers, j) == 1,
            };
            if alone {
                n.val = in_slot;
                own = false;
            }
        }
        Op::Act(a) => {
            if let Ref::Node(j) = input_ref {
                if consumers(layers, j) == 1 && output_not_needed(&nodes[j].op) {
                    n.val = nodes[j].val;
                    n.inplace = true;
                    own = false;
                    if matches!(
                        nodes[j].op,
                        Op::Linear { .. } | Op::Conv2d { .. } | Op::BatchNorm
                    ) {
                        nodes[j].fuse = Some(a);
                    }
                }
            }
        }
        _ => {}
    }
    if own {
        n.val = Slot::Ws(s.vals);
        s.vals = tri!(cadd(s.vals, out.len()));
    }
    // R-derivatives: a Flatten view is a view here too; other active
    // nodes own one.
    if n.active {
        let flat_view = matches!(l.op, Op::Flatten) && !own;
        if flat_view {
            if let Ref::Node(j) = input_ref {
                n.rval = nodes[j].rval;
            }
        } else {
            n.rval = s.rvals;
            s.rvals = tri!(cadd(s.rvals, out.len()));
        }
    }
    if let Op::BatchNorm = l.op {
        n.state_off = s.state;
        s.state = tri!(cadd(s.state, tri!(cmul(2, in_dims.c))));
        n.ext = s.ext;
        s.ext = tri!(cadd(s.ext, tri!(cmul(BN_EXT, in_dims.c))));
        n.ext_hvp = s.ext_hvp;
        s.ext_hvp = tri!(cadd(s.ext_hvp, tri!(cmul(BN_EXT_HVP, in_dims.c))));
        s.batch_norms += 1;
    }
    Ok(())
}
