//! The layer-list grammar of `--model` (see the module docs of
//! [`crate::arch`]), both ways: entries parsed into the kernel's layers,
//! and layers written back as entries (what a folded network's layer list
//! is made of).
//!
//! A layer list is comma-separated (PyTorch: `nn.Sequential` with one
//! module per entry, names `0`, `1`, …):
//!
//! | entry | layer |
//! |---|---|
//! | `conv:OUT:K[:sS][:pP][:gG][:nobias]` | `Conv2d(in, OUT, K, stride=S, padding=P, groups=G)` |
//! | `dwconv:K[:sS][:pP][:nobias]` | depthwise `Conv2d(in, in, K, groups=in)` |
//! | `bn` | `BatchNorm2d` (`BatchNorm1d` on vectors) |
//! | `relu`, `tanh`, `sigmoid`, `identity` | activation |
//! | `maxpool:K[:sS][:pP]`, `avgpool:K[:sS][:pP]` | pooling (stride K by default) |
//! | `gap` | `AdaptiveAvgPool2d(1)` + flatten |
//! | `flatten` | `Flatten` |
//! | `linear[:OUT][:nobias]` (or `fc`) | `Linear(in, OUT)`; OUT defaults to the number of classes |
//! | `block:OUT[:sS]` | ResNet basic block (conv-bn-relu-conv-bn + shortcut, relu) |
//! | `wblock:OUT[:sS]` | wide-ResNet pre-activation block (bn-relu-conv-bn-relu-conv + shortcut) |
//! | `add:I` | adds layer I's output to its input (a residual join) |
//! | `ENTRY@I`, `ENTRY@in` | the entry reads layer I's output (or the network input), not the previous layer's |
//! | `KIND:FIELD=VALUE:…` | any layer kind by its record: a name of `Op::NAMES` and every one of its fields (`Op::field_names`), e.g. `maxpool:k=3:stride=2:pad=1`; counts, `true`/`false` (`bias`), an activation's name (`act`) |
//!
//! Layers are counted from 0 as planned (a block is 7 to 9 layers). e.g.
//! `conv:8:3:p1,relu,maxpool:2,conv:16:3:p1,relu,maxpool:2,flatten,linear`;
//! with a residual join, `conv:8:3:p1,relu,conv:8:3:p1,add:1,relu,gap,linear`
//! (layer 3 adds layer 1's output to layer 2's). Folding batch norm writes
//! residual nets this way.

use super::*;
use fdgr_kernel::model::param_len;

/// Splits `conv:16:3:p1` into the name and its fields.
fn fields(tok: &str) -> (&str, Vec<&str>) {
    let mut it = tok.split(':');
    let name = it.next().unwrap_or("");
    (name, it.collect())
}

/// The options of a layer-list entry (`sS`, `pP`, `gG`, `nobias`).
#[derive(Debug)]
struct Opts {
    stride: Option<usize>,
    pad: Option<usize>,
    groups: Option<usize>,
    bias: bool,
}

/// Parses the options of a layer-list entry, accepting only those in
/// `allowed` (`'s'` stride, `'p'` padding, `'g'` groups, `'b'` nobias).
/// Strict: an unknown, repeated, malformed or inapplicable option, or a
/// zero stride or group count, is an error naming the entry and the
/// option.
fn opts(tok: &str, rest: &[&str], allowed: &str) -> Result<Opts> {
    let mut o = Opts {
        stride: None,
        pad: None,
        groups: None,
        bias: true,
    };
    let expected = {
        let mut v = vec![];
        for (c, name) in [('s', "sN"), ('p', "pN"), ('g', "gN"), ('b', "nobias")] {
            if allowed.contains(c) {
                v.push(name);
            }
        }
        if v.is_empty() {
            "no options".to_string()
        } else {
            v.join(", ")
        }
    };
    let layer = tok.split(':').next().unwrap_or(tok);
    for opt in rest {
        let (key, v) = if *opt == "nobias" {
            ('b', "")
        } else {
            let mut ch = opt.chars();
            match ch.next() {
                Some(c @ ('s' | 'p' | 'g')) => (c, ch.as_str()),
                _ => bail!("'{tok}': unknown option '{opt}' ({layer} takes {expected})"),
            }
        };
        if !allowed.contains(key) {
            bail!("'{tok}': option '{opt}' does not apply to {layer} ({layer} takes {expected})");
        }
        let num = || -> Result<usize> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                bail!("'{tok}': option '{opt}': '{v}' is not a non-negative integer");
            }
            v.parse()
                .map_err(|_| anyhow!("'{tok}': option '{opt}': {v} is too large"))
        };
        let dup = |set: bool| -> Result<()> {
            if set {
                bail!("'{tok}': option '{opt}' given twice");
            }
            Ok(())
        };
        match key {
            'b' => {
                dup(!o.bias)?;
                o.bias = false;
            }
            's' => {
                dup(o.stride.is_some())?;
                let n = num()?;
                if n == 0 {
                    bail!("'{tok}': stride must be positive (got '{opt}')");
                }
                o.stride = Some(n);
            }
            'p' => {
                dup(o.pad.is_some())?;
                o.pad = Some(num()?);
            }
            _ => {
                dup(o.groups.is_some())?;
                let n = num()?;
                if n == 0 {
                    bail!("'{tok}': groups must be positive (got '{opt}')");
                }
                o.groups = Some(n);
            }
        }
    }
    Ok(o)
}

/// An entry that takes no options (`relu`, `bn`, `flatten`, …).
fn no_opts(tok: &str, rest: &[&str]) -> Result<()> {
    if let Some(o) = rest.first() {
        let layer = tok.split(':').next().unwrap_or(tok);
        bail!("'{tok}': {layer} takes no options (got '{o}')");
    }
    Ok(())
}

fn num(tok: &str, v: Option<&&str>, what: &str) -> Result<usize> {
    let v = v.with_context(|| format!("'{tok}': missing {what}"))?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        bail!("'{tok}': {what} '{v}' is not a positive integer");
    }
    let n: usize = v
        .parse()
        .map_err(|_| anyhow!("'{tok}': {what} {v} is too large"))?;
    if n == 0 {
        bail!("'{tok}': {what} must be positive");
    }
    Ok(n)
}

/// The output shape of the layers so far (for `dwconv` and blocks, which
/// need their input channels).
fn dims_so_far(layers: &[Layer], input: Dims) -> Result<Dims> {
    if layers.is_empty() {
        return Ok(input);
    }
    let mut nodes = vec![Node::EMPTY; layers.len()];
    // plan without the "unused output" rule: the list is unfinished
    let mut l = layers.to_vec();
    // a trailing read of the last layer keeps every layer used
    let last = l.len() - 1;
    l.push(Layer::flatten().from(Src::Node(last)));
    nodes.push(Node::EMPTY);
    plan(&l, input, &mut nodes).map_err(|e| anyhow!("{e}"))?;
    Ok(nodes[last].out_dims)
}

pub(super) fn layer_list(spec: &str, input: Dims, classes: usize) -> Result<Builder> {
    let mut b = Builder::new();
    let toks: Vec<&str> = spec.split(',').map(str::trim).collect();
    if toks.len() > MAX_ENTRIES {
        bail!(
            "{} entries in the layer list (at most {MAX_ENTRIES})",
            toks.len()
        );
    }
    for (i, full) in toks.iter().enumerate() {
        // `ENTRY@I` / `ENTRY@in`: the layer reads layer I's output (or the
        // network input) instead of the previous layer's
        let (tok, src) = match full.split_once('@') {
            None => (*full, None),
            Some((t, at)) => (t, Some(source(full, at, b.layers.len())?)),
        };
        let before = b.layers.len();
        entry(&mut b, full, tok, src, input, classes, &i.to_string())?;
        if let Some(src) = src {
            if b.layers.len() != before + 1 {
                let name = fields(tok).0;
                bail!("'{full}': @ applies to single layers, not to '{name}'");
            }
            if let Some(l) = b.layers.last_mut() {
                l.src = src;
            }
        }
    }
    Ok(b)
}

/// Appends the layers of entry `full` (`tok` without its `@I`; reading
/// `src`, when given, instead of the previous layer; `idx` its index in
/// the list) to `b`.
fn entry(
    b: &mut Builder,
    full: &str,
    tok: &str,
    src: Option<Src>,
    input: Dims,
    classes: usize,
    idx: &str,
) -> Result<()> {
    let (name, rest) = fields(tok);
    let cur = |b: &Builder| match src {
        None | Some(Src::Prev) => dims_so_far(&b.layers, input),
        Some(Src::Input) => Ok(input),
        Some(Src::Node(j)) => dims_so_far(&b.layers[..=j], input),
    };
    // a kind by its record: named (for its parameters' keys) if it has any
    let by_record = |b: &mut Builder, l: Layer| -> Result<()> {
        let named = param_len(&l.op, cur(b)?) > 0;
        b.push(l, if named { idx } else { "" });
        Ok(())
    };
    if let Some(l) = record_entry(tok, name, &rest, false)? {
        return by_record(b, l);
    }
    match name {
        "conv" => {
            let out = num(tok, rest.first(), "output channels")?;
            let k = num(tok, rest.get(1), "kernel size")?;
            let o = opts(tok, rest.get(2..).unwrap_or(&[]), "spgb")?;
            let mut l = Layer::conv(out, k)
                .stride(o.stride.unwrap_or(1))
                .pad(o.pad.unwrap_or(0))
                .groups(o.groups.unwrap_or(1));
            if !o.bias {
                l = l.no_bias();
            }
            b.push(l, idx);
        }
        "dwconv" => {
            let k = num(tok, rest.first(), "kernel size")?;
            let o = opts(tok, rest.get(1..).unwrap_or(&[]), "spb")?;
            let c = cur(b)?.c;
            let mut l = Layer::conv(c, k)
                .stride(o.stride.unwrap_or(1))
                .pad(o.pad.unwrap_or(0))
                .groups(c);
            if !o.bias {
                l = l.no_bias();
            }
            b.push(l, idx);
        }
        "bn" => {
            no_opts(tok, &rest)?;
            b.push(Layer::batch_norm(), idx);
        }
        "relu" | "tanh" | "sigmoid" | "identity" => {
            no_opts(tok, &rest)?;
            let a = Act::from_name(name).with_context(|| format!("'{tok}'"))?;
            b.push(Layer::act(a), "");
        }
        "maxpool" | "avgpool" => {
            let k = num(tok, rest.first(), "window size")?;
            let o = opts(tok, rest.get(1..).unwrap_or(&[]), "sp")?;
            let l = if name == "maxpool" {
                Layer::max_pool(k)
            } else {
                Layer::avg_pool(k)
            };
            b.push(l.stride(o.stride.unwrap_or(k)).pad(o.pad.unwrap_or(0)), "");
        }
        "gap" => {
            no_opts(tok, &rest)?;
            b.push(Layer::global_avg_pool(), "");
        }
        "flatten" => {
            no_opts(tok, &rest)?;
            b.push(Layer::flatten(), "");
        }
        "linear" | "fc" => {
            let (out, opt_start) = match rest.first() {
                Some(v) if *v != "nobias" => (num(tok, Some(v), "output features")?, 1),
                _ => (classes, 0),
            };
            let o = opts(tok, rest.get(opt_start..).unwrap_or(&[]), "b")?;
            let l = if o.bias {
                Layer::linear(out)
            } else {
                Layer::linear(out).no_bias()
            };
            b.push(l, idx);
        }
        "block" | "wblock" => {
            let out = num(tok, rest.first(), "output channels")?;
            let o = opts(tok, rest.get(1..).unwrap_or(&[]), "s")?;
            let s = o.stride.unwrap_or(1);
            let cin = cur(b)?.c;
            let x = if b.layers.is_empty() {
                None
            } else {
                Some(b.last())
            };
            let p = format!("{idx}.");
            if name == "block" {
                b.basic_block(&p, x, cin, out, s);
            } else {
                let x = x.context("'wblock' cannot be the first layer (it needs a layer to add to)")?;
                b.wide_block(&p, x, cin, out, s);
            }
        }
        "add" => {
            let other = rest
                .first()
                .with_context(|| format!("'{full}': missing the layer to add (add:I)"))?;
            if rest.len() > 1 {
                bail!("'{full}': add takes one layer index (add:I)");
            }
            let j = match source(full, other, b.layers.len())? {
                Src::Node(j) => j,
                _ => bail!("'{full}': add:I takes a layer index I, not the input"),
            };
            b.push(Layer::add(j), "");
        }
        "" => bail!("empty entry in the layer list"),
        // a kind with no entry of its own: its record, with no fields
        _ if Op::code_of(name).is_some() => {
            let l = record_entry(tok, name, &rest, true)?
                .with_context(|| format!("'{tok}': expected {name}:FIELD=VALUE:…"))?;
            by_record(b, l)?;
        }
        _ => bail!(
            "'{tok}': unknown layer (expected conv, dwconv, bn, relu, tanh, sigmoid, identity, maxpool, avgpool, gap, flatten, linear, add, block, wblock)"
        ),
    }
    Ok(())
}

/// `KIND:FIELD=VALUE:…`, a layer by its record ([`Op::from_fields`]):
/// `None` when `name` is no kind, or `tok` is not in that form (no
/// `FIELD=VALUE`) and not `always`. Every field the kind has must be given,
/// once; nothing else.
fn record_entry(tok: &str, name: &str, rest: &[&str], always: bool) -> Result<Option<Layer>> {
    let Some(code) = Op::code_of(name) else {
        return Ok(None);
    };
    let names = Op::field_names(code);
    if !always && !rest.iter().any(|r| r.contains('=')) {
        return Ok(None);
    }
    let mut f = OpFields::NONE;
    let mut seen = vec![];
    for r in rest {
        let (k, v) = r
            .split_once('=')
            .with_context(|| format!("'{tok}': '{r}' is not FIELD=VALUE"))?;
        let Some(want) = names.iter().find(|n| **n == k) else {
            bail!(
                "'{tok}': {name} has no field '{k}' (its fields: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        };
        if seen.contains(want) {
            bail!("'{tok}': field '{k}' given twice");
        }
        seen.push(*want);
        // the field's type, from the record (`act` is the one without a
        // value in an empty record)
        let value = match OpFields::NONE.get(k) {
            Some(FieldValue::Flag(_)) => match v {
                "true" => FieldValue::Flag(true),
                "false" => FieldValue::Flag(false),
                _ => bail!("'{tok}': {k} is true or false, not '{v}'"),
            },
            Some(FieldValue::Num(_)) => {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    bail!("'{tok}': {k} '{v}' is not a count");
                }
                FieldValue::Num(
                    v.parse()
                        .map_err(|_| anyhow!("'{tok}': {k} {v} is too large"))?,
                )
            }
            _ => FieldValue::Act(
                Act::from_name(v)
                    .with_context(|| format!("'{tok}': '{v}' is not an activation"))?,
            ),
        };
        f.set(k, value);
    }
    if let Some(missing) = names.iter().find(|n| !seen.contains(n)) {
        bail!(
            "'{tok}': missing the field '{missing}' (a {name} has {})",
            names.join(", ")
        );
    }
    let op = Op::from_fields(code, &f).with_context(|| format!("'{tok}': not a {name}"))?;
    Ok(Some(Layer::new(op)))
}

/// The layer an entry reads (`@I`, `@in`) or adds (`add:I`): `in` is the
/// network input, `I` a layer before the entry (`count` layers so far).
fn source(tok: &str, at: &str, count: usize) -> Result<Src> {
    if at == "in" {
        return Ok(Src::Input);
    }
    if at.is_empty() || !at.bytes().all(|b| b.is_ascii_digit()) {
        bail!("'{tok}': '{at}' is not a layer index (or 'in' for the network input)");
    }
    match at.parse::<usize>() {
        Ok(j) if j < count => Ok(Src::Node(j)),
        _ => bail!("'{tok}': layer {at} is not before this entry (layers 0 to {count} come first)"),
    }
}

pub(super) fn is_layer_word(s: &str) -> bool {
    matches!(
        s,
        "bn" | "relu" | "tanh" | "sigmoid" | "identity" | "gap" | "flatten" | "linear" | "fc"
    ) || Op::code_of(s).is_some_and(|c| Op::field_names(c).is_empty())
}

/// A layer-list entry for `l`, layer `i` of the list (the grammar of
/// `--model`, residual joins and other sources included).
pub(crate) fn entry_of(i: usize, l: &Layer) -> String {
    let mut e = op_entry(l);
    match l.src {
        Src::Prev => {}
        Src::Input if i == 0 => {}
        Src::Input => e.push_str("@in"),
        Src::Node(j) if j + 1 == i => {}
        Src::Node(j) => e.push_str(&format!("@{j}")),
    }
    e
}

fn op_entry(l: &Layer) -> String {
    match l.op {
        Op::Linear { out, bias } => format!("linear:{out}{}", if bias { "" } else { ":nobias" }),
        Op::Conv2d {
            out,
            k,
            stride,
            pad,
            groups,
            bias,
        } => {
            let mut e = format!("conv:{out}:{k}");
            if stride != 1 {
                e.push_str(&format!(":s{stride}"));
            }
            if pad != 0 {
                e.push_str(&format!(":p{pad}"));
            }
            if groups != 1 {
                e.push_str(&format!(":g{groups}"));
            }
            if !bias {
                e.push_str(":nobias");
            }
            e
        }
        Op::Act(a) => a.name().to_string(),
        Op::MaxPool { k, stride, pad } | Op::AvgPool { k, stride, pad } => {
            let name = if matches!(l.op, Op::MaxPool { .. }) {
                "maxpool"
            } else {
                "avgpool"
            };
            let mut e = format!("{name}:{k}");
            if stride != k {
                e.push_str(&format!(":s{stride}"));
            }
            if pad != 0 {
                e.push_str(&format!(":p{pad}"));
            }
            e
        }
        Op::GlobalAvgPool => "gap".into(),
        Op::Flatten => "flatten".into(),
        Op::BatchNorm => "bn".into(),
        Op::Add { other } => format!("add:{other}"),
        // a kind without an entry of its own: its record
        #[allow(unreachable_patterns)]
        _ => record_of(&l.op),
    }
}

/// `KIND:FIELD=VALUE:…` for `op` (what [`record_entry`] reads).
fn record_of(op: &Op) -> String {
    let f = op.fields();
    let mut e = op.name().to_string();
    for k in Op::field_names(op.code()) {
        let v = match f.get(k) {
            Some(FieldValue::Num(n)) => n.to_string(),
            Some(FieldValue::Flag(b)) => b.to_string(),
            Some(FieldValue::Act(a)) => a.name().to_string(),
            None => continue,
        };
        e.push_str(&format!(":{k}={v}"));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Arch> {
        Arch::parse(s, Act::Relu, Dims::new(2, 8, 8), 10)
    }

    /// A kind by its record is the layer (and the parameter names) of its
    /// own entry.
    #[test]
    fn layers_by_their_record() {
        let a = parse("conv:8:3:p1:nobias,bn,relu,maxpool:3:s2:p1,conv:8:1,add:3,gap,linear:5")
            .unwrap();
        let b = parse(
            "conv:out=8:k=3:stride=1:pad=1:groups=1:bias=false,bn,act:act=relu,\
             maxpool:k=3:stride=2:pad=1,conv:out=8:k=1:stride=1:pad=0:groups=1:bias=true,\
             add:other=3,gap,linear:out=5:bias=true",
        )
        .unwrap();
        assert_eq!(a.layers, b.layers);
        assert_eq!(a.names, b.names);
        assert_eq!(b.names[4], "4");
        assert_eq!(b.names[2], "");
    }

    /// Every kind's record, written back, reads as the same layer.
    #[test]
    fn every_kind_round_trips_through_its_record() {
        let a = parse("conv:6:3:s2:p1:g2,bn,tanh,avgpool:2,maxpool:3:s1:p1,conv:6:1,add:5,flatten,linear:4:nobias")
            .unwrap();
        let mut seen = vec![];
        for l in &a.layers {
            let e = record_of(&l.op);
            let rest: Vec<&str> = e.split(':').skip(1).collect();
            let got = record_entry(&e, l.op.name(), &rest, true).unwrap().unwrap();
            assert_eq!(got.op, l.op, "{e}");
            seen.push(l.op.code());
        }
        let g = parse("conv:4:3,gap,linear").unwrap();
        let gap = &g.layers[1];
        let e = record_of(&gap.op);
        assert_eq!(e, "gap");
        assert_eq!(
            record_entry(&e, "gap", &[], true).unwrap().unwrap().op,
            gap.op
        );
        seen.push(gap.op.code());
        for code in 0..Op::NAMES.len() as u8 {
            assert!(
                seen.contains(&code),
                "{} not round-tripped",
                Op::NAMES[code as usize]
            );
        }
    }

    #[test]
    fn bad_records_say_why() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert!(e("maxpool:k=3:stride=2,flatten,linear").contains("missing the field 'pad'"));
        assert!(e("maxpool:k=3:stride=2:pad=0:groups=1,flatten,linear")
            .contains("maxpool has no field 'groups' (its fields: k, stride, pad)"));
        assert!(e("maxpool:k=3:k=3:stride=2:pad=0,flatten,linear").contains("given twice"));
        assert!(e("maxpool:k=x:stride=2:pad=0,flatten,linear").contains("k 'x' is not a count"));
        assert!(e("maxpool:k=3:stride=2:pad,flatten,linear").contains("'pad' is not FIELD=VALUE"));
        assert!(
            e("conv:out=4:k=3:stride=1:pad=0:groups=1:bias=yes,flatten,linear")
                .contains("bias is true or false")
        );
        assert!(e("act:act=swish,flatten,linear").contains("'swish' is not an activation"));
        // a zero stride: the kernel's own check, named
        assert!(e("maxpool:k=3:stride=0:pad=0,flatten,linear").contains("stride"));
    }
}
