//! Picks the model and the sample stream the firmware fine-tunes on, checks
//! them against the configuration, copies them into `OUT_DIR`, and writes
//! the constants the static buffers are sized from (`generated.rs`).
//!
//! Environment (all optional):
//! * `FDGR_MODEL`: a weight file written by `fdgr export`
//!   (default `firmware-examples/models/digits-64-32-10.fdgr`);
//! * `FDGR_STREAM`: the sample stream (`fdgr_kernel::stream`: the model's
//!   input count of pixels then the label per sample; default
//!   `firmware-examples/models/digits-stream.bin`);
//! * `FDGR_PIXEL_MAX`: what pixels are divided by (default 16, the UCI
//!   digits' 0..=16; 255 for 8-bit images);
//! * `FDGR_METHOD`: any of the kernel's methods (`fgr` by default; `sgd`,
//!   `db`, `bgr`, `cgr`, `sam`, `usam`, `flood`);
//! * `FDGR_OPT`: `sgd` (default: plain SGD) or `adam`;
//! * `FDGR_MODE`: `full` (default) or `last` (last layer only);
//! * `FDGR_LR`: the learning rate (default: the optimizer's);
//! * `FDGR_GAMMA`, `FDGR_EPS`, `FDGR_RHO`, `FDGR_FLOOD_LEVEL`: the
//!   method's γ, ε, ρ or flood level, where it has them (default:
//!   `src/config.rs`'s `HYPER`).

use std::fmt::Write as _;
use std::path::PathBuf;

#[allow(dead_code)]
#[path = "src/config.rs"]
mod config;

use fdgr_kernel::{export, Layer, Loss};

/// A layer as a Rust expression of `fdgr_kernel`'s types (through the
/// kind's flat record, [`fdgr_kernel::model::OpFields`], so that a new
/// layer kind needs nothing here).
fn layer_expr(l: &Layer) -> String {
    let k = "fdgr_kernel::model";
    let f = l.op.fields();
    let act = match f.act {
        Some(a) => format!("Some(fdgr_kernel::Act::{a:?})"),
        None => "None".into(),
    };
    let op = format!(
        "{k}::Op::of_fields({}, &{k}::OpFields {{ out: {}, k: {}, stride: {}, pad: {}, groups: {}, bias: {}, act: {act}, other: {} }})",
        l.op.code(),
        f.out,
        f.k,
        f.stride,
        f.pad,
        f.groups,
        f.bias,
        f.other
    );
    // `Prev`, `Input`, `Node(3)`: the variant as Rust source
    format!("{k}::Layer::new({op}).from({k}::Src::{:?})", l.src)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("fdgr-firmware build: {e}");
        std::process::exit(1);
    }
}

fn input(var: &str, default: &str) -> Result<(PathBuf, Vec<u8>), String> {
    println!("cargo:rerun-if-env-changed={var}");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let path = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => manifest.join(default),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = std::fs::read(&path).map_err(|e| format!("{var}={}: {e}", path.display()))?;
    Ok((path, bytes))
}

fn choice(var: &str, default: &str) -> String {
    println!("cargo:rerun-if-env-changed={var}");
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn run() -> Result<(), String> {
    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let (model_path, model) = input("FDGR_MODEL", "../models/digits-64-32-10.fdgr")?;
    // The live image (feature `live`) learns from samples that arrive over
    // the link: it carries no stream, so one image serves any samples.
    let live = std::env::var_os("CARGO_FEATURE_LIVE").is_some();
    let (stream_path, stream) = if live {
        (PathBuf::from("(none: live)"), vec![])
    } else {
        input("FDGR_STREAM", "../models/digits-stream.bin")?
    };

    let pixel_max_s = choice("FDGR_PIXEL_MAX", "");
    let pixel_max = if pixel_max_s.is_empty() {
        config::DEFAULT_PIXEL_MAX
    } else {
        pixel_max_s
            .parse()
            .ok()
            .filter(|v| config::pixel_max_ok(*v))
            .ok_or_else(|| {
                format!("FDGR_PIXEL_MAX={pixel_max_s}: expected a number from 1 to 255")
            })?
    };
    let mode_s = choice("FDGR_MODE", "full");
    let mode = config::parse_mode(&mode_s).ok_or_else(|| {
        format!("FDGR_MODE={mode_s}: expected full, last, last:K, bias or layers:I,J,…")
    })?;
    let mut layers = [Layer::flatten(); fdgr_kernel::finetune::MAX_NODES];
    let (k, input, loss) = config::layers_of(&model, &mut layers)
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    let layers = &layers[..k];
    let models =
        config::plan(&model, mode).map_err(|e| format!("{}: {e}", model_path.display()))?;
    let mut theta = vec![0.0f32; models.params()];
    export::decode_theta(&model, &mut theta)
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    let n = if live {
        0
    } else {
        config::check(&models, &stream, pixel_max).map_err(|e| {
            format!(
                "{} with {}: {e}",
                model_path.display(),
                stream_path.display()
            )
        })?
    };
    let needs_conv = layers.iter().any(|l| l.op.needs_conv());
    if needs_conv && std::env::var_os("CARGO_FEATURE_CONV").is_none() {
        return Err(format!(
            "{}: the model has convolution or pooling layers: build with `--features fdgr-firmware/conv`",
            model_path.display()
        ));
    }
    let method = choice("FDGR_METHOD", "fgr");
    let method_index = config::method_index(&method).ok_or_else(|| {
        let names: Vec<&str> = config::METHODS.iter().map(|m| m.name()).collect();
        format!("FDGR_METHOD={method}: expected {}", names.join(", "))
    })?;
    let opt = choice("FDGR_OPT", "sgd");
    let opt_index = config::optimizer_index(&opt).ok_or_else(|| {
        format!(
            "FDGR_OPT={opt}: expected {}",
            config::OPTIMIZER_NAMES.join(", ")
        )
    })?;

    std::fs::write(out.join("stream.bin"), &stream).map_err(|e| e.to_string())?;

    let loss = match loss {
        Loss::SoftmaxCe => "SoftmaxCe",
        Loss::Mse => "Mse",
    };
    // `Full`, `Last(2)`, `Bias`, `Layers(5)`: the variant as Rust source
    let mode_v = format!("{mode:?}");
    let mut g = String::new();
    let _ = writeln!(g, "// Generated by build.rs from {}.", model_path.display());
    let _ = writeln!(
        g,
        "/// The model's layer list, from the weight file.\npub const LAYERS: [fdgr_kernel::Layer; {k}] = [{}];",
        layers.iter().map(layer_expr).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        g,
        "/// Shape of one input sample.\npub const INPUT: fdgr_kernel::Dims = fdgr_kernel::Dims::new({}, {}, {});",
        input.c, input.h, input.w
    );
    let _ = writeln!(
        g,
        "/// Inputs per sample: the model's.\npub const INPUTS: usize = {};",
        input.len()
    );
    let _ = writeln!(
        g,
        "/// Pixels are divided by this (`FDGR_PIXEL_MAX`).\npub const PIXEL_MAX: f32 = f32::from_bits({:#010x});",
        pixel_max.to_bits()
    );
    let _ = writeln!(
        g,
        "/// Loss.\npub const LOSS: fdgr_kernel::Loss = fdgr_kernel::Loss::{loss};"
    );
    let _ = writeln!(
        g,
        "/// Samples in the stream (= fine-tuning steps; 0 in the live image).\npub const STEPS: usize = {n};"
    );
    let save_every = choice("FDGR_SAVE_EVERY", "16");
    let save_every: u64 = save_every
        .parse()
        .ok()
        .filter(|&k| k >= 1)
        .ok_or_else(|| format!("FDGR_SAVE_EVERY={save_every}: expected a whole number ≥ 1"))?;
    let _ = writeln!(
        g,
        "/// The live image saves its state every this many learned samples (`FDGR_SAVE_EVERY`).\npub const SAVE_EVERY: u64 = {save_every};"
    );
    let _ = writeln!(
        g,
        "/// The factory model's identity ([`fdgr_kernel::link::model_id`] of the weight file).\npub const MODEL_ID: u64 = {:#018x};",
        fdgr_kernel::link::model_id(&model)
    );
    // What the live image saves under: the model and what is trained (the
    // layout of the saved parameters), so that another mode never loads it.
    let _ = writeln!(
        g,
        "/// The identity of the saved state: [`MODEL_ID`] and the mode (`FDGR_MODE`).\npub const STORE_ID: u64 = {:#018x};",
        fdgr_kernel::link::model_id(&model) ^ fdgr_kernel::link::model_id(mode.to_string().as_bytes()).rotate_left(1)
    );
    // `FDGR_GAMMA`, `FDGR_EPS`, `FDGR_RHO`, `FDGR_FLOOD_LEVEL`: other
    // hyper-parameters than the configuration's
    let mut hyper = vec![];
    for (i, var) in config::HYPER_VARS.into_iter().enumerate() {
        let s = choice(var, "");
        hyper.push(if s.is_empty() {
            format!("crate::config::HYPER.to_array()[{i}]")
        } else {
            let v: f32 = s
                .parse()
                .map_err(|_| format!("{var}={s}: expected a number"))?;
            config::hyper_ok(i, v).map_err(|what| format!("{var}={s}: expected {what}"))?;
            format!("f32::from_bits({:#010x})", v.to_bits())
        });
    }
    let _ = writeln!(
        g,
        "/// Training method (`FDGR_METHOD`={method}; `FDGR_GAMMA`, `FDGR_EPS`, `FDGR_RHO`, `FDGR_FLOOD_LEVEL`).\npub const METHOD: fdgr_kernel::Method<f32> = fdgr_kernel::Method::all({})[{method_index}];",
        hyper.join(", ")
    );
    let (ty, val, lr, nstate) = match opt_index {
        0 => ("Sgd", "SGD", "LR", 0),
        _ => ("Adam", "ADAM", "ADAM_LR", 2),
    };
    // `FDGR_LR`: another learning rate than the optimizer's default
    let lr_var = choice("FDGR_LR", "");
    let lr = if lr_var.is_empty() {
        format!("crate::config::{lr}")
    } else {
        let v: f32 = lr_var
            .parse()
            .ok()
            .filter(|v: &f32| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("FDGR_LR={lr_var}: expected a positive number"))?;
        format!("f32::from_bits({:#010x})", v.to_bits())
    };
    let _ = writeln!(
        g,
        "/// Base optimizer type (`FDGR_OPT`={opt}).\npub type Opt = fdgr_kernel::{ty}<f32>;\n\
         /// Base optimizer.\npub const OPT: Opt = crate::config::{val};\n\
         /// Its learning rate (`FDGR_LR` where given).\npub const OPT_LR: f32 = {lr};\n\
         /// Its state vectors.\npub const OPT_STATE: usize = {nstate};"
    );
    let _ = writeln!(
        g,
        "/// Trained parameters (`FDGR_MODE`).\npub const MODE: fdgr_kernel::finetune::Mode = fdgr_kernel::finetune::Mode::{mode_v};\n\
         /// Its name.\npub const MODE_NAME: &str = \"{mode}\";"
    );
    // θ as read by the kernel's own decoder above, as an array in flash:
    // the starting point of fine-tuning, and in last-layer mode the frozen
    // layers, read in place.
    let _ = write!(
        g,
        "/// The model's parameters, decoded from the weight file at build time (in flash).\npub static FROZEN: [f32; {}] = [",
        theta.len()
    );
    for t in &theta {
        let _ = write!(g, "f32::from_bits({:#010x}),", t.to_bits());
    }
    let _ = writeln!(g, "];");
    let _ = writeln!(
        g,
        "/// The sample stream (in flash).\npub static STREAM: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/stream.bin\"));"
    );
    std::fs::write(out.join("generated.rs"), g).map_err(|e| e.to_string())?;
    println!("cargo:rerun-if-changed=src/config.rs");
    Ok(())
}
