//! The pre-trained nets the firmware checks fine-tune ([`Pretrained`]),
//! trained and exported with the CLI ([`train_and_export`]).

use super::*;

/// A net the firmware checks fine-tune: pre-trained on digits with the
/// CLI and exported, as `models/README.md` says.
pub(crate) struct Pretrained {
    /// Checkpoint directory under the output directory.
    pub(crate) ckpt: &'static str,
    /// Exported weight file under the output directory.
    pub(crate) file: &'static str,
    /// `fdgr train` flags besides `--out`.
    train: &'static [&'static str],
    /// Step names of the training and the export.
    steps: (&'static str, &'static str),
}

/// The 64-32-10 MLP.
pub(crate) const MLP_RUN: Pretrained = Pretrained {
    ckpt: "digits-64-32-10-ckpt",
    file: "digits-64-32-10.fdgr",
    train: &[
        "--data", "digits", "--model", "64-32-10", "--act", "tanh", "--method", "fgr", "--gamma",
        "0.01", "--eps", "0.1", "--epochs", "30", "--batch", "32", "--lr", "0.1", "--seed", "1",
    ],
    steps: ("fdgr train (digits 64-32-10 tanh, F-GR)", "fdgr export"),
};

/// The reference conv net.
pub(crate) const CONV_RUN: Pretrained = Pretrained {
    ckpt: "digits-conv-ckpt",
    file: CONV_FILE,
    train: &[
        "--data", "digits", "--model", CONV_SPEC, "--method", "fgr", "--gamma", "0.01", "--eps",
        "0.1", "--epochs", "15", "--batch", "32", "--lr", "0.05", "--seed", "1",
    ],
    steps: (
        "fdgr train (digits conv net, F-GR)",
        "fdgr export (conv net)",
    ),
};

/// The `dscnn` preset on 28×28 MNIST (one epoch: what is checked is that
/// a real-sized depthwise-separable net builds for the boards and learns
/// bit for bit on the device, not its accuracy).
pub(crate) const DSCNN_RUN: Pretrained = Pretrained {
    ckpt: "mnist5k-dscnn-ckpt",
    file: "mnist5k-dscnn.fdgr",
    train: &[
        "--data", "mnist5k", "--model", "dscnn", "--method", "sgd", "--epochs", "1", "--lr", "0.1",
        "--seed", "1",
    ],
    steps: (
        "fdgr train (mnist5k 28x28 dscnn, 1 epoch)",
        "fdgr export (dscnn)",
    ),
};

/// A residual net with batch norm (ResNet basic blocks, one with a
/// projection shortcut): folded into a layer list with residual joins for
/// the device.
pub(crate) const RESIDUAL_RUN: Pretrained = Pretrained {
    ckpt: "digits-residual-ckpt",
    file: "digits-residual.fdgr",
    train: &[
        "--data",
        "digits",
        "--model",
        "conv:8:3:p1,bn,relu,block:8,block:16:s2,gap,linear",
        "--epochs",
        "2",
        "--seed",
        "1",
    ],
    steps: (
        "fdgr train (digits residual net with batch norm)",
        "fdgr export (residual net, folded)",
    ),
};

/// A CIFAR-style ResNet on the 8×8 digits: `resnet14`, 34 layers once
/// its batch norms are folded (more than the 24 a firmware planned with
/// at first), fine-tuned in bias mode.
pub(crate) const RESNET_RUN: Pretrained = Pretrained {
    ckpt: "digits-resnet14-ckpt",
    file: "digits-resnet14.fdgr",
    train: &[
        "--data", "digits", "--model", "resnet14", "--epochs", "1", "--seed", "1",
    ],
    steps: (
        "fdgr train (digits resnet14, 1 epoch)",
        "fdgr export (resnet14, folded)",
    ),
};

/// `fdgr train` and `fdgr export` of `net` into `out`.
pub(crate) fn train_and_export(
    out: &Path,
    net: &Pretrained,
) -> Result<(PathBuf, Vec<Step>), String> {
    let ckpt = out.join(net.ckpt);
    let model = out.join(net.file);
    // Stale outputs must not pass for fresh ones.
    let _ = std::fs::remove_dir_all(&ckpt);
    let _ = std::fs::remove_file(&model);
    let (ckpt_s, model_s) = (ckpt.display().to_string(), model.display().to_string());
    let mut steps = vec![];
    let mut train = vec!["run", "--release", "-p", "fdgr", "--", "train"];
    train.extend_from_slice(net.train);
    train.extend(["--out", &ckpt_s]);
    steps.push(run(net.steps.0, cargo(&train))?);
    let export = cargo(&[
        "run",
        "--release",
        "-p",
        "fdgr",
        "--",
        "export",
        "--ckpt",
        &ckpt_s,
        "--out",
        &model_s,
    ]);
    steps.push(run(net.steps.1, export)?);
    if !model.is_file() {
        return Err(format!(
            "`fdgr export` did not write {} (is the fdgr CLI complete?)",
            model.display()
        ));
    }
    Ok((model, steps))
}
