//! Network architectures: what `--model` accepts, turned into the kernel's
//! layer list, with the name of every layer in the equivalent PyTorch
//! module (so checkpoints load with `load_state_dict(strict=True)`).
//!
//! `--model` takes one of:
//!
//! * **MLP widths**, inputs first: `784-512-512-10` (hidden activation
//!   from `--act`). PyTorch: `nn.Sequential(Linear, act, Linear, …)`, so
//!   the weights are `0.weight`, `2.weight`, ….
//! * **A preset**, sized to the data (input channels and size, classes):
//!   `lenet5`, `resnet20` / `resnet32` / `resnet44` / `resnet56` /
//!   `resnet110` (He et al.'s CIFAR ResNets, 1×1 conv + BN projection
//!   shortcuts), `resnet18` (the CIFAR variant: 3×3 stem, no max-pool),
//!   `wrn-D-K` (wide ResNet, pre-activation blocks: `wrn-16-4`,
//!   `wrn-28-10`). Names follow the usual PyTorch definitions:
//!   `conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.shortcut.0` (ResNets),
//!   `block1.layer.0.bn1`, `block1.layer.0.convShortcut` (WRN), `linear` /
//!   `fc`; `bench/torch_models.py` defines each of them. `dscnn` /
//!   `dscnn-W`: a depthwise-separable CNN for microcontrollers (DS-CNN /
//!   MobileNet style; stem width W, default 8): a 3×3 stem, four
//!   depthwise-3×3 + pointwise-1×1 blocks (widths 2W, 4W, 8W, 8W; two of
//!   them stride 2), global average pooling and a linear layer, each
//!   convolution followed by batch norm and ReLU (folded into the
//!   convolutions for a device); the stem has stride 2 on inputs of 16
//!   pixels or more. A layer list, so named as one (`0`, `1`, …).
//! * **A layer list**, comma-separated (PyTorch: `nn.Sequential` with one
//!   module per entry, names `0`, `1`, …): the grammar and its table of
//!   entries are in [`grammar`].

use anyhow::{anyhow, bail, Context, Result};
use fdgr_kernel::model::{plan, Dims, FieldValue, Layer, Model, Node, Op, OpFields, Src};
use fdgr_kernel::{Act, Loss, Shape};

pub mod grammar;
pub(crate) use grammar::entry_of;
use grammar::{is_layer_word, layer_list};

/// A planned network and the PyTorch name of each layer.
#[derive(Clone, Debug)]
pub struct Arch {
    /// `--model` as given (presets and layer lists), or the widths.
    pub spec: String,
    /// The layer list.
    pub layers: Vec<Layer>,
    /// The PyTorch module path of each layer ("" for layers without
    /// parameters or buffers).
    pub names: Vec<String>,
    /// The planned model.
    pub model: Model<Vec<Node>>,
    /// The MLP shape, when the network is an MLP given by its widths.
    pub mlp: Option<Shape>,
    /// The hidden activation `--act` gave (MLPs and LeNet use it).
    pub act: Act,
}

/// A tensor of a checkpoint: its name, shape and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// PyTorch name (`layer1.0.conv1.weight`).
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Offset in θ (parameters) or in the state vector (running statistics).
    pub offset: usize,
    /// Number of values.
    pub len: usize,
}

/// Names of the presets, for help texts and errors.
pub const PRESETS: &str = "lenet5 | resnet20 | resnet32 | resnet44 | resnet56 | resnet110 | resnet18 | wrn-D-K (e.g. wrn-16-4, wrn-28-10) | dscnn | dscnn-W (stem width W)";

/// The most stem width of `dscnn-W`.
pub const MAX_DSCNN_WIDTH: usize = 256;

/// The layer list of `dscnn-W` on inputs of shape `input` (see the module
/// docs).
pub fn dscnn_spec(w: usize, input: Dims) -> String {
    let stem = if input.h.min(input.w) >= 16 { 2 } else { 1 };
    let mut s = format!("conv:{w}:3:s{stem}:p1,bn,relu");
    for (out, stride) in [(2 * w, 1), (4 * w, 2), (8 * w, 2), (8 * w, 1)] {
        s.push_str(&format!(
            ",dwconv:3:s{stride}:p1,bn,relu,conv:{out}:1,bn,relu"
        ));
    }
    s.push_str(",gap,flatten,linear");
    s
}

/// Parses MLP widths `784-512-10`.
pub fn parse_dims(s: &str) -> Option<Vec<usize>> {
    let v: Option<Vec<usize>> = s.split('-').map(|t| t.trim().parse().ok()).collect();
    v.filter(|v| v.len() >= 2)
}

/// Builds layers with their names.
struct Builder {
    layers: Vec<Layer>,
    names: Vec<String>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            layers: vec![],
            names: vec![],
        }
    }
    /// Appends a layer; returns its index.
    fn push(&mut self, l: Layer, name: impl Into<String>) -> usize {
        self.layers.push(l);
        self.names.push(name.into());
        self.layers.len() - 1
    }
    fn last(&self) -> usize {
        self.layers.len() - 1
    }

    /// ResNet basic block (post-activation): out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
    /// `x` is the index of the block input (None: the network input).
    fn basic_block(
        &mut self,
        p: &str,
        x: Option<usize>,
        cin: usize,
        cout: usize,
        stride: usize,
    ) -> usize {
        let src = x.map_or(Src::Input, Src::Node);
        self.push(
            Layer::conv(cout, 3)
                .stride(stride)
                .pad(1)
                .no_bias()
                .from(src),
            format!("{p}conv1"),
        );
        self.push(Layer::batch_norm(), format!("{p}bn1"));
        self.push(Layer::act(Act::Relu), "");
        self.push(Layer::conv(cout, 3).pad(1).no_bias(), format!("{p}conv2"));
        let main = self.push(Layer::batch_norm(), format!("{p}bn2"));
        if stride != 1 || cin != cout {
            self.push(
                Layer::conv(cout, 1).stride(stride).no_bias().from(src),
                format!("{p}shortcut.0"),
            );
            self.push(Layer::batch_norm(), format!("{p}shortcut.1"));
            self.push(Layer::add(main), "");
        } else {
            match x {
                Some(xi) => self.push(Layer::add(xi).from(Src::Node(main)), ""),
                None => self.push(Layer::add(main).from(Src::Input), ""),
            };
        }
        self.push(Layer::act(Act::Relu), "")
    }

    /// Wide-ResNet block (pre-activation, as in the reference PyTorch
    /// code): with equal widths out = x + conv2(relu(bn2(conv1(relu(bn1(x)))))),
    /// else the shortcut is convShortcut(relu(bn1(x))).
    fn wide_block(&mut self, p: &str, x: usize, cin: usize, cout: usize, stride: usize) -> usize {
        self.push(Layer::batch_norm().from(Src::Node(x)), format!("{p}bn1"));
        let a = self.push(Layer::act(Act::Relu), "");
        self.push(
            Layer::conv(cout, 3).stride(stride).pad(1).no_bias(),
            format!("{p}conv1"),
        );
        self.push(Layer::batch_norm(), format!("{p}bn2"));
        self.push(Layer::act(Act::Relu), "");
        let main = self.push(Layer::conv(cout, 3).pad(1).no_bias(), format!("{p}conv2"));
        if cin == cout && stride == 1 {
            self.push(Layer::add(x).from(Src::Node(main)), "")
        } else {
            self.push(
                Layer::conv(cout, 1)
                    .stride(stride)
                    .no_bias()
                    .from(Src::Node(a)),
                format!("{p}convShortcut"),
            );
            self.push(Layer::add(main), "")
        }
    }
}

/// The most entries a layer list may have (planning is quadratic in the
/// number of layers; presets and blocks expand to more layers).
pub const MAX_ENTRIES: usize = 1000;
/// The deepest preset (He et al. trained ResNet-1202 on CIFAR).
pub const MAX_DEPTH: usize = 1202;
/// The widest wide-ResNet factor.
pub const MAX_WIDEN: usize = 1024;

fn cifar_resnet(depth: usize, classes: usize) -> Result<Builder> {
    if depth < 8 || (depth - 2) % 6 != 0 || depth > MAX_DEPTH {
        bail!(
            "resnet{depth}: CIFAR ResNets have depth 6n+2 up to {MAX_DEPTH} (20, 32, 44, 56, 110)"
        );
    }
    let n = (depth - 2) / 6;
    let mut b = Builder::new();
    b.push(Layer::conv(16, 3).pad(1).no_bias(), "conv1");
    b.push(Layer::batch_norm(), "bn1");
    let mut x = b.push(Layer::act(Act::Relu), "");
    let mut cin = 16;
    for (g, w) in [16usize, 32, 64].into_iter().enumerate() {
        for i in 0..n {
            let s = if g > 0 && i == 0 { 2 } else { 1 };
            x = b.basic_block(&format!("layer{}.{i}.", g + 1), Some(x), cin, w, s);
            cin = w;
        }
    }
    b.push(Layer::global_avg_pool(), "");
    b.push(Layer::linear(classes), "linear");
    Ok(b)
}

fn resnet18(classes: usize) -> Builder {
    let mut b = Builder::new();
    b.push(Layer::conv(64, 3).pad(1).no_bias(), "conv1");
    b.push(Layer::batch_norm(), "bn1");
    let mut x = b.push(Layer::act(Act::Relu), "");
    let mut cin = 64;
    for (g, w) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for i in 0..2 {
            let s = if g > 0 && i == 0 { 2 } else { 1 };
            x = b.basic_block(&format!("layer{}.{i}.", g + 1), Some(x), cin, w, s);
            cin = w;
        }
    }
    b.push(Layer::global_avg_pool(), "");
    b.push(Layer::linear(classes), "linear");
    b
}

fn wide_resnet(depth: usize, k: usize, classes: usize) -> Result<Builder> {
    if depth < 10 || (depth - 4) % 6 != 0 || k == 0 || depth > MAX_DEPTH || k > MAX_WIDEN {
        bail!(
            "wrn-{depth}-{k}: wide ResNets have depth 6n+4 up to {MAX_DEPTH} (16, 22, 28, 40) and \
             width 1 ≤ k ≤ {MAX_WIDEN}"
        );
    }
    let n = (depth - 4) / 6;
    let mut b = Builder::new();
    let mut x = b.push(Layer::conv(16, 3).pad(1).no_bias(), "conv1");
    let mut cin = 16;
    for (g, w) in [16 * k, 32 * k, 64 * k].into_iter().enumerate() {
        for i in 0..n {
            let s = if g > 0 && i == 0 { 2 } else { 1 };
            x = b.wide_block(&format!("block{}.layer.{i}.", g + 1), x, cin, w, s);
            cin = w;
        }
    }
    b.push(Layer::batch_norm(), "bn1");
    b.push(Layer::act(Act::Relu), "");
    b.push(Layer::global_avg_pool(), "");
    b.push(Layer::linear(classes), "fc");
    Ok(b)
}

fn lenet5(input: Dims, classes: usize, act: Act) -> Builder {
    let mut b = Builder::new();
    // adapts to the input size: pad so that each 5×5 convolution keeps at
    // least a 2×2 map after pooling (28×28 → padding 2 as in LeCun's
    // MNIST LeNet; 32×32 → none; 8×8 → padding 2 on both convolutions)
    let p1 = if input.h < 32 { 2 } else { 0 };
    let h1 = (input.h + 2 * p1).saturating_sub(4) / 2;
    let p2 = if h1 < 10 { 2 } else { 0 };
    b.push(Layer::conv(6, 5).pad(p1), "conv1");
    b.push(Layer::act(act), "");
    b.push(Layer::max_pool(2), "");
    b.push(Layer::conv(16, 5).pad(p2), "conv2");
    b.push(Layer::act(act), "");
    b.push(Layer::max_pool(2), "");
    b.push(Layer::flatten(), "");
    b.push(Layer::linear(120), "fc1");
    b.push(Layer::act(act), "");
    b.push(Layer::linear(84), "fc2");
    b.push(Layer::act(act), "");
    b.push(Layer::linear(classes), "fc3");
    b
}

impl Arch {
    /// The network `spec` (see the module docs) on inputs of shape
    /// `input` with `classes` outputs; `act` is the hidden activation of
    /// MLPs and LeNet. Errors name the flag and what was expected.
    pub fn parse(spec: &str, act: Act, input: Dims, classes: usize) -> Result<Arch> {
        let s = spec.trim();
        let err = |e: anyhow::Error| anyhow!("--model {s}: {e:#}");
        if let Some(dims) = parse_dims(s) {
            return Arch::mlp(&dims, act).map_err(err);
        }
        if s.chars().all(|c| c.is_ascii_digit() || c == '-') {
            return Err(err(anyhow!(
                "expected 2 to 5 non-zero widths, inputs first (e.g. 784-512-512-10)"
            )));
        }
        let b = if let Some(d) = s.strip_prefix("resnet") {
            match d.parse::<usize>() {
                Ok(18) => resnet18(classes),
                Ok(n) => cifar_resnet(n, classes).map_err(err)?,
                Err(_) => return Err(err(anyhow!("unknown preset (expected {PRESETS})"))),
            }
        } else if let Some(dk) = s.strip_prefix("wrn-") {
            let mut it = dk.split('-');
            let (d, k) = (it.next().map(str::parse), it.next().map(str::parse));
            match (d, k, it.next()) {
                (Some(Ok(d)), Some(Ok(k)), None) => wide_resnet(d, k, classes).map_err(err)?,
                _ => return Err(err(anyhow!("expected wrn-DEPTH-WIDTH, e.g. wrn-28-10"))),
            }
        } else if s == "lenet5" || s == "lenet" {
            lenet5(input, classes, act)
        } else if let Some(w) = s.strip_prefix("dscnn") {
            let w = match w.strip_prefix('-').map(str::parse::<usize>) {
                None if w.is_empty() => 8,
                Some(Ok(w)) if (1..=MAX_DSCNN_WIDTH).contains(&w) => w,
                _ => {
                    return Err(err(anyhow!(
                        "expected dscnn or dscnn-W with a stem width W from 1 to {MAX_DSCNN_WIDTH}"
                    )))
                }
            };
            layer_list(&dscnn_spec(w, input), input, classes).map_err(err)?
        } else if s.contains(':') || s.contains(',') || is_layer_word(s) {
            layer_list(s, input, classes).map_err(err)?
        } else {
            return Err(err(anyhow!(
                "unknown model (expected MLP widths such as 784-512-10, a preset: {PRESETS}, or a layer list such as conv:8:3:p1,relu,maxpool:2,flatten,linear)"
            )));
        };
        let mut a = Arch::from_layers(s, b.layers, b.names, input).map_err(err)?;
        a.act = act;
        Ok(a)
    }

    /// An MLP of widths `dims` (2 to 5) and hidden activation `act`.
    pub fn mlp(dims: &[usize], act: Act) -> Result<Arch> {
        let shape = Shape::try_new(dims, act, Loss::SoftmaxCe).map_err(|_| {
            anyhow!("expected 2 to 5 non-zero widths, inputs first (e.g. 784-512-512-10)")
        })?;
        let (ls, k) = fdgr_kernel::mlp::layers(&shape);
        let layers = ls[..k].to_vec();
        // nn.Sequential(Linear, act, Linear, …): Linear l at index 2(l−1)
        let mut names = vec![];
        let mut lin = 0;
        for l in &layers {
            match l.op {
                Op::Linear { .. } => {
                    names.push((2 * lin).to_string());
                    lin += 1;
                }
                _ => names.push(String::new()),
            }
        }
        let spec = dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("-");
        let mut a = Arch::from_layers(&spec, layers, names, Dims::flat(dims[0]))?;
        a.mlp = Some(shape);
        a.act = act;
        Ok(a)
    }

    fn from_layers(
        spec: &str,
        layers: Vec<Layer>,
        names: Vec<String>,
        input: Dims,
    ) -> Result<Arch> {
        let mut nodes = vec![Node::EMPTY; layers.len()];
        let sizes = plan(&layers, input, &mut nodes).map_err(|e| anyhow!("{e}"))?;
        Ok(Arch {
            spec: spec.to_string(),
            layers,
            names,
            model: Model::from_plan(nodes, input, Loss::SoftmaxCe, sizes),
            mlp: None,
            act: Act::Relu,
        })
    }

    /// Parameters P.
    pub fn param_count(&self) -> usize {
        self.model.param_count()
    }

    /// Outputs (classes).
    pub fn outputs(&self) -> usize {
        self.model.outputs()
    }

    /// Input values per sample.
    pub fn inputs(&self) -> usize {
        self.model.input.len()
    }

    /// Whether the model has batch-norm layers (state beside θ).
    pub fn has_state(&self) -> bool {
        self.model.sizes.state > 0
    }

    /// The parameters, in θ order, with their PyTorch names and shapes
    /// (each layer's [`Op::tensors`]).
    pub fn params(&self) -> Vec<TensorInfo> {
        let mut v = vec![];
        for (n, name) in self.model.nodes().iter().zip(&self.names) {
            let mut offset = n.param_off;
            for t in n.op.tensors(n.in_dims).as_slice() {
                v.push(TensorInfo {
                    name: format!("{name}.{}", t.name),
                    shape: t.shape().to_vec(),
                    offset,
                    len: t.numel(),
                });
                offset += t.numel();
            }
        }
        v
    }

    /// The running statistics (offsets into the state vector), and the
    /// names of the `num_batches_tracked` counters.
    pub fn buffers(&self) -> (Vec<TensorInfo>, Vec<String>) {
        let (mut v, mut counters) = (vec![], vec![]);
        for (n, name) in self.model.nodes().iter().zip(&self.names) {
            if let Op::BatchNorm = n.op {
                let c = n.in_dims.c;
                for (i, s) in ["running_mean", "running_var"].iter().enumerate() {
                    v.push(TensorInfo {
                        name: format!("{name}.{s}"),
                        shape: vec![c],
                        offset: n.state_off + i * c,
                        len: c,
                    });
                }
                counters.push(format!("{name}.num_batches_tracked"));
            }
        }
        (v, counters)
    }

    /// The layer list as JSON, for rebuilding the network elsewhere (the
    /// `fdgr.layers` metadata; `bench/torch_models.py` reads it): one
    /// object per layer with its op, fields, name, and `src` (index of the
    /// layer it reads, −1 for the network input, null for the previous).
    pub fn layers_json(&self) -> serde_json::Value {
        let v: Vec<serde_json::Value> = self
            .layers
            .iter()
            .zip(&self.names)
            .map(|(l, name)| {
                let mut o = serde_json::json!({"op": l.op.name()});
                let f = l.op.fields();
                for &field in Op::field_names(l.op.code()) {
                    o[field] = match f.get(field) {
                        Some(FieldValue::Num(n)) => serde_json::json!(n),
                        Some(FieldValue::Flag(b)) => serde_json::json!(b),
                        Some(FieldValue::Act(a)) => serde_json::json!(a.name()),
                        None => serde_json::Value::Null,
                    };
                }
                o["src"] = match l.src {
                    Src::Prev => serde_json::Value::Null,
                    Src::Input => serde_json::json!(-1),
                    Src::Node(i) => serde_json::json!(i),
                };
                o["name"] = serde_json::json!(name);
                o
            })
            .collect();
        serde_json::Value::Array(v)
    }

    /// A one-line description: `resnet20 (20 conv/linear layers, 272,474
    /// parameters)`, `784-512-512-10 relu`.
    pub fn describe(&self) -> String {
        match &self.mlp {
            Some(s) => format!("{} {}", self.spec, s.act.name()),
            None => format!("{} (input {})", self.spec, self.model.input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cifar(spec: &str, classes: usize) -> Arch {
        Arch::parse(spec, Act::Relu, Dims::new(3, 32, 32), classes).unwrap()
    }

    /// Parameter counts equal PyTorch's for the same modules (counted with
    /// `sum(p.numel() for p in m.parameters())` on `bench/torch_models.py`).
    #[test]
    fn dscnn_is_sized_to_the_input() {
        let mnist = Arch::parse("dscnn", Act::Relu, Dims::new(1, 28, 28), 10).unwrap();
        let cifar = Arch::parse("dscnn", Act::Relu, Dims::new(3, 32, 32), 10).unwrap();
        let digits = Arch::parse("dscnn-4", Act::Relu, Dims::new(1, 8, 8), 10).unwrap();
        // the stem: stride 2 from 16 pixels on; then 14 → 7 → 4, 16 → 8 → 4
        assert!(mnist.spec.starts_with("dscnn"));
        let gap_in = |a: &Arch| {
            let n = a.model.nodes();
            n.iter()
                .find(|n| matches!(n.op, Op::GlobalAvgPool))
                .unwrap()
                .in_dims
        };
        assert_eq!(gap_in(&mnist), Dims::new(64, 4, 4));
        assert_eq!(gap_in(&cifar), Dims::new(64, 4, 4));
        assert_eq!(gap_in(&digits), Dims::new(32, 2, 2));
        // 4 depthwise convolutions; every convolution followed by batch norm
        let dw = |a: &Arch| {
            a.layers
                .iter()
                .filter(|l| matches!(l.op, Op::Conv2d { groups, .. } if groups > 1))
                .count()
        };
        assert_eq!((dw(&mnist), dw(&cifar)), (4, 4));
        assert_eq!(mnist.param_count(), 9_498);
        assert_eq!(cifar.param_count() - mnist.param_count(), 2 * 8 * 9);
        for bad in ["dscnn-0", "dscnn-x", "dscnn-", "dscnn-257"] {
            assert!(
                Arch::parse(bad, Act::Relu, Dims::new(1, 28, 28), 10).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn preset_parameter_counts() {
        assert_eq!(cifar("resnet20", 10).param_count(), 272_474);
        assert_eq!(cifar("resnet18", 10).param_count(), 11_173_962);
        assert_eq!(cifar("wrn-16-4", 10).param_count(), 2_748_890);
        assert_eq!(cifar("wrn-28-10", 10).param_count(), 36_479_194);
        assert_eq!(cifar("resnet56", 100).param_count(), 861_620);
        let l8 = Arch::parse("lenet5", Act::Relu, Dims::new(1, 8, 8), 10).unwrap();
        assert_eq!(l8.param_count(), 21_386);
        let l = Arch::parse("lenet5", Act::Relu, Dims::new(1, 28, 28), 10).unwrap();
        assert_eq!(l.param_count(), 61_706);
        let l = Arch::parse("lenet5", Act::Relu, Dims::new(3, 32, 32), 10).unwrap();
        assert_eq!(l.param_count(), 62_006);
    }

    #[test]
    fn names_follow_pytorch() {
        let a = cifar("resnet20", 10);
        let names: Vec<String> = a.params().into_iter().map(|t| t.name).collect();
        assert_eq!(names[0], "conv1.weight");
        assert!(names.contains(&"layer1.0.conv1.weight".to_string()));
        assert!(names.contains(&"layer2.0.shortcut.0.weight".to_string()));
        assert!(names.contains(&"layer2.0.shortcut.1.bias".to_string()));
        assert!(!names.contains(&"layer1.0.shortcut.0.weight".to_string()));
        assert_eq!(names.last().unwrap(), "linear.bias");
        let (bufs, counters) = a.buffers();
        assert_eq!(bufs[0].name, "bn1.running_mean");
        assert_eq!(counters.len(), 1 + 9 * 2 + 2);
        let w = cifar("wrn-16-4", 10);
        let names: Vec<String> = w.params().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"block1.layer.0.convShortcut.weight".to_string()));
        assert!(!names.contains(&"block1.layer.1.convShortcut.weight".to_string()));
        assert_eq!(names.last().unwrap(), "fc.bias");
        let m = Arch::parse("64-32-10", Act::Tanh, Dims::new(1, 8, 8), 10).unwrap();
        let names: Vec<String> = m.params().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
    }

    #[test]
    fn layer_lists() {
        let a = Arch::parse(
            "conv:8:3:p1,relu,maxpool:2,conv:16:3:p1,relu,maxpool:2,flatten,linear",
            Act::Relu,
            Dims::new(1, 8, 8),
            10,
        )
        .unwrap();
        assert_eq!(a.param_count(), 1_898);
        let names: Vec<String> = a.params().into_iter().map(|t| t.name).collect();
        assert_eq!(names[0], "0.weight");
        assert_eq!(names[2], "3.weight");
        assert_eq!(names[4], "7.weight");
        let b = Arch::parse(
            "conv:16:3:p1:nobias,bn,relu,block:16,block:32:s2,gap,fc",
            Act::Relu,
            Dims::new(3, 16, 16),
            10,
        )
        .unwrap();
        let names: Vec<String> = b.params().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"4.shortcut.0.weight".to_string()));
        assert!(names.contains(&"3.conv2.weight".to_string()));
        let d = Arch::parse(
            "dwconv:3:p1,bn,relu,gap,fc",
            Act::Relu,
            Dims::new(4, 6, 6),
            3,
        )
        .unwrap();
        assert_eq!(d.param_count(), 4 * 9 + 4 + 8 + 4 * 3 + 3);
    }

    #[test]
    fn bad_specs_say_why() {
        let e = |s: &str| {
            Arch::parse(s, Act::Relu, Dims::new(1, 8, 8), 10)
                .unwrap_err()
                .to_string()
        };
        assert!(e("resnet21").contains("6n+2"));
        assert!(e("wrn-27-10").contains("6n+4"));
        assert!(e("vgg16").contains("unknown model"));
        assert!(e("conv:8").contains("kernel size"));
        assert!(e("conv:8:3:q1").contains("unknown option"));
        assert!(e("conv:8:9,linear").contains("kernel larger"));
        assert!(e("linear:10,conv:3:3").contains("invalid model"));
        assert!(e("pool:2").contains("unknown layer"));
        assert!(e("0-3").contains("widths"));
        assert!(e("conv:8:3,,linear").contains("empty entry"));
    }
}
