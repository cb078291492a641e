//! `cargo xtask mutants`: shows that the GPU tests catch a broken line in
//! any CUDA source. Each mutation below breaks one line of one file of
//! `gpu/kernels/`; the GPU crate's unit tests (which run the CUDA C on the
//! CPU) then run, and the tests that failed are listed. The file is
//! restored after each run. Fails if any mutation goes unnoticed. Not part
//! of `cargo xtask test` (it rebuilds the tests once per mutation).
//!
//! If it is interrupted, `git checkout gpu/kernels` restores the sources.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::util::{cargo, root};

/// One broken line: in `file`, `from` (which must occur exactly once)
/// becomes `to`.
struct Mutation {
    file: &'static str,
    from: &'static str,
    to: &'static str,
    what: &'static str,
}

const MUTATIONS: &[Mutation] = &[
    Mutation {
        file: "common.cuh",
        from: "case ACT_TANH: return 1.0f - a * a;",
        to: "case ACT_TANH: return 1.0f + a * a;",
        what: "tanh' = 1 + a^2",
    },
    Mutation {
        file: "common.cuh",
        from: "        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];\n        __syncthreads();",
        to: "        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];",
        what: "block_sum: no barrier between tree levels",
    },
    Mutation {
        file: "common.cuh",
        from: "    sh[threadIdx.x] = v;\n    __syncthreads();",
        to: "    sh[threadIdx.x] = v;",
        what: "block_sum: no barrier after the stores",
    },
    Mutation {
        file: "common.cuh",
        from: "case ACT_SIGMOID: return 1.0f - 2.0f * a;",
        to: "case ACT_SIGMOID: return 2.0f * a - 1.0f;",
        what: "sigmoid kappa sign",
    },
    Mutation {
        file: "act.cu",
        from: "z[i] = act_f(act, z[i] + bias[ch]);",
        to: "z[i] = act_f(act, z[i]) + bias[ch];",
        what: "bias_act: bias after the activation",
    },
    Mutation {
        file: "act.cu",
        from: "for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];",
        to: "for (int y = 1; y < 8; ++y) t += part[y][threadIdx.x];",
        what: "col_sum: row group 0 dropped",
    },
    Mutation {
        file: "act.cu",
        from: "    part[threadIdx.y][threadIdx.x] = s;\n    __syncthreads();",
        to: "    part[threadIdx.y][threadIdx.x] = s;",
        what: "col_sum: no barrier before the column totals",
    },
    Mutation {
        file: "act.cu",
        from: "rd[i] = act_kappa(act, ai) * rz[i] * dz[i] + act_df(act, ai) * rd[i];",
        to: "rd[i] = act_kappa(act, ai) * rz[i] * dz[i] + rd[i];",
        what: "r_act_backward: sigma' factor dropped",
    },
    Mutation {
        file: "loss.cu",
        from: "row_loss[r] = (m - z[y]) + ls;",
        to: "row_loss[r] = (m + ls) - z[y];",
        what: "cross-entropy grouped as m + ls - z_y (the old drift)",
    },
    Mutation {
        file: "loss.cu",
        from: "if (d) d[j] = two_inv_n * e;",
        to: "if (d) d[j] = two_inv_n * z[j];",
        what: "MSE gradient ignores the target",
    },
    Mutation {
        file: "loss.cu",
        from: "hh[j] = p * (rr[j] - pr) * inv_b;",
        to: "hh[j] = p * rr[j] * inv_b;",
        what: "loss_hvp: p.r term dropped",
    },
    Mutation {
        file: "loss.cu",
        from: "if (z[j] > z[best]) best = j;",
        to: "if (z[j] >= z[best]) best = j;",
        what: "count_correct: last index on ties",
    },
    Mutation {
        file: "vecops.cu",
        from: "y[i] += a * x[i];",
        to: "y[i] = a * x[i];",
        what: "axpy overwrites y",
    },
    Mutation {
        file: "vecops.cu",
        from: "if (threadIdx.x == 0) partial[blockIdx.x] = t;",
        to: "if (threadIdx.x == 0) partial[0] = t;",
        what: "dot_partial: every block writes partial 0",
    },
    Mutation {
        file: "vecops.cu",
        from: "out[0] = (accumulate ? out[0] : 0.0f) + t * scale;",
        to: "out[0] = (accumulate ? 0.0f : out[0]) + t * scale;",
        what: "reduce_sum: accumulate inverted",
    },
    Mutation {
        file: "vecops.cu",
        from: "if (scalar && gs_start() == 0) bad |= !isfinite(scalar[0]);",
        to: "if (scalar && gs_start() == 0) bad |= isnan(scalar[0]);",
        what: "nonfinite: an infinite loss passes",
    },
    Mutation {
        file: "optim.cu",
        from: "di = nesterov ? di + mu * vi : vi;",
        to: "di = nesterov ? vi + mu * vi : vi;",
        what: "Nesterov: v + mu v",
    },
    Mutation {
        file: "optim.cu",
        from: "if (skip && (skip[0] | skip[1])) return;",
        to: "if (skip && skip[0]) return;",
        what: "opt_update ignores the halted flag",
    },
    Mutation {
        file: "optim.cu",
        from: "if (flags[0] != 0u && flags[1] == 0u) {",
        to: "if (flags[0] != 0u) {",
        what: "commit_step: a later rejection overwrites the first",
    },
    Mutation {
        file: "data.cu",
        from: "if (c == 0) yb[r] = labels[idx[r]];",
        to: "if (c == 0) yb[r] = labels[r];",
        what: "gather_rows: labels not gathered",
    },
    Mutation {
        file: "act.cu",
        from: "const u32 ch = (u32)((i / hw) % c);\n            z[i]",
        to: "const u32 ch = (u32)(i % c); (void)hw;\n            z[i]",
        what: "bias_act: channel of a plane taken as i mod C",
    },
    Mutation {
        file: "act.cu",
        from: "ra[i] = act_df(act, a[i]) * rz[i];",
        to: "ra[i] = act_df(act, rz[i]) * rz[i]; (void)a;",
        what: "r_act: sigma' at R{z}",
    },
    Mutation {
        file: "act.cu",
        from: "for (u32 t = 1; t < hw; ++t) s += p[t];",
        to: "for (u32 t = 2; t < hw; ++t) s += p[t];",
        what: "chan_sum: a plane's second value dropped",
    },
    Mutation {
        file: "act.cu",
        from: "        __syncthreads();\n        if (threadIdx.x == 0) {\n            const u32 end",
        to: "        if (threadIdx.x == 0) {\n            const u32 end",
        what: "chan_sum: no barrier before thread 0 adds the planes",
    },
    Mutation {
        file: "vecops.cu",
        from: "y[i] = beta == 0.0f ? alpha * x[i] : beta * y[i] + alpha * x[i];",
        to: "y[i] = beta * y[i] + alpha * x[i];",
        what: "axpby: beta = 0 reads y (NaN leaks)",
    },
    Mutation {
        file: "vecops.cu",
        from: "if (skip && (skip[0] | skip[1])) return;\n    for (u64 i = gs_start(); i < n; i += gs_stride()) dst[i] = src[i];",
        to: "(void)skip;\n    for (u64 i = gs_start(); i < n; i += gs_stride()) dst[i] = src[i];",
        what: "copy_unless: rejected steps commit their running statistics",
    },
    Mutation {
        file: "conv.cu",
        from: "if (iy >= 0 && iy < h && ix >= 0 && ix < w) {",
        to: "if (iy >= 0 && iy < h && ix >= 0 && ix <= w) {",
        what: "im2col: reads past the right edge",
    },
    Mutation {
        file: "conv.cu",
        from: "if (ty < 0 || ty % stride != 0 || ty / stride >= oh) continue;",
        to: "if (ty < 0 || ty / stride >= oh) continue;",
        what: "col2im: strided taps not skipped",
    },
    Mutation {
        file: "conv.cu",
        from: "float s = beta == 0.0f ? 0.0f : beta * dx[at];",
        to: "float s = beta * dx[at];",
        what: "col2im: beta = 0 reads dx",
    },
    Mutation {
        file: "conv.cu",
        from: "dst[at] = beta == 0.0f ? v : beta * dst[at] + v;",
        to: "dst[at] = beta == 0.0f ? v : dst[at] + v;",
        what: "from_cnp: beta ignored",
    },
    Mutation {
        file: "conv.cu",
        from: "dst[i] = src[((u64)(n0 + j) * kk + kc) * np + p];",
        to: "dst[i] = src[((u64)j * kk + kc) * np + p]; (void)n0;",
        what: "to_cnp: chunk offset n0 ignored",
    },
    Mutation {
        file: "norm.cu",
        from: "const double d = (double)x[chan_at(e, c, hw, ch)] - mu;\n        v += d * d;",
        to: "const double d = (double)x[chan_at(e, c, hw, ch)];\n        v += d * d;",
        what: "bn_stats: variance around 0",
    },
    Mutation {
        file: "norm.cu",
        from: "const float unbiased = m2f / (float)(m - 1);",
        to: "const float unbiased = m2f / (float)m;",
        what: "bn_stats: biased variance in the running statistics",
    },
    Mutation {
        file: "norm.cu",
        from: "const float is = eval ? 1.0f / sqrtf(stats[c + ch] + eps) : stats[c + ch];",
        to: "const float is = eval ? 1.0f / sqrtf(stats[c + ch]) : stats[c + ch]; (void)eps;",
        what: "bn_apply: eval without eps",
    },
    Mutation {
        file: "norm.cu",
        from: "const float v = k * (dy[i] - mdy - ((x[i] - mu) * is) * mdyx);",
        to: "const float v = k * (dy[i] - mdy); (void)mu; (void)mdyx; (void)x;",
        what: "bn_bwd_dx: xhat term dropped",
    },
    Mutation {
        file: "norm.cu",
        from: "dp[ch] = beta == 0.0f ? alpha * sdyx : beta * dp[ch] + alpha * sdyx;",
        to: "dp[ch] = beta == 0.0f ? alpha * sdy : beta * dp[ch] + alpha * sdy;",
        what: "bn_bwd_sums: d gamma = sum dy",
    },
    Mutation {
        file: "norm.cu",
        from: "const float rxh = is * (rx[i] - rstats[ch] - xh * rstats[c + ch]);",
        to: "const float rxh = is * (rx[i] - rstats[ch]);",
        what: "bn_rfwd_apply: R{xhat} misses the variance term",
    },
    Mutation {
        file: "norm.cu",
        from: "rsums[ch] = t3 + t4;",
        to: "rsums[ch] = t3;",
        what: "bn_rbwd_sums: R{d gamma} misses dy R{xhat}",
    },
    Mutation {
        file: "norm.cu",
        from: "const float rs = -(is * is) * mb;",
        to: "const float rs = -is * mb;",
        what: "bn_rbwd_dx: R{s} = -s mean",
    },
    Mutation {
        file: "norm.cu",
        // (in bn_rbwd_sums only thread 0 uses the totals, so dropping the
        // trailing barrier there changes nothing: an equivalent mutation;
        // bn_stats' threads all use the mean)
        from: "    const double mu = block_sum_all(sh, s) / md;",
        to: "    const double mu = block_sum(sh, s) / md;",
        what: "bn_stats: shared buffer rewritten before all threads read the mean",
    },
    Mutation {
        file: "pool.cu",
        from: "if (x[i] > x[best]) best = i;",
        to: "if (x[i] >= x[best]) best = i;",
        what: "max pooling: last maximum on ties",
    },
    Mutation {
        file: "pool.cu",
        from: "const u32 ylo = iy + pad + 1 > kh ? (iy + pad + 1 - kh + stride - 1) / stride : 0;",
        to: "const u32 ylo = iy + pad + 1 > kh ? (iy + pad + 1 - kh) / stride : 0;",
        what: "pool_bwd: a window that misses the input counted",
    },
    Mutation {
        file: "pool.cu",
        from: "float s = acc ? dx[i] : 0.0f;",
        to: "float s = dx[i]; (void)acc;",
        what: "pool_bwd: overwrite mode adds to dx",
    },
    Mutation {
        file: "pool.cu",
        from: "ry[i] = rx[base + pool_argmax(g, x + base, o / ow, o % ow)];",
        to: "ry[i] = rx[base + pool_argmax(g, rx + base, o / ow, o % ow)]; (void)x;",
        what: "pool_r: arg-max of R{x}",
    },
    Mutation {
        file: "data.cu",
        from: "const u32 jj = (cr >> 20) & 1u ? w - 1 - xo : xo;",
        to: "const u32 jj = xo;",
        what: "gather_crop: flip ignored",
    },
];

/// Puts the original text back when dropped (also on error or panic).
struct Restore {
    path: PathBuf,
    text: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.text) {
            eprintln!(
                "mutants: could not restore {}: {e} (git checkout gpu/kernels)",
                self.path.display()
            );
        }
    }
}

/// Runs the GPU unit tests; the names of the failed tests. A mutation the
/// compiler rejects (warnings are errors in the CPU build) is an error: it
/// would show nothing about the tests.
fn failing_tests() -> Result<Vec<String>, String> {
    let out = cargo(&["test", "-p", "fdgr-gpu", "--release", "--lib"])
        .output()
        .map_err(|e| format!("cargo test: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(str::to_string)
        .collect();
    if out.status.success() {
        return Ok(vec![]);
    }
    if stderr.contains("could not compile") || stderr.contains("failed to run custom build") {
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("build failed");
        return Err(format!("does not build: {first}"));
    }
    if failed.is_empty() {
        // the test binary died (a signal): it failed, but names no test
        return Ok(vec!["(test binary crashed)".into()]);
    }
    Ok(failed)
}

fn mutate(dir: &Path, m: &Mutation) -> Result<Vec<String>, String> {
    let path = dir.join(m.file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = text.matches(m.from).count();
    if n != 1 {
        return Err(format!(
            "{}: the line to break occurs {n} times (must be once): {:?}",
            m.file, m.from
        ));
    }
    let _restore = Restore {
        path: path.clone(),
        text: text.clone(),
    };
    std::fs::write(&path, text.replacen(m.from, m.to, 1))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    failing_tests()
}

/// The CUDA sources of `dir` (`.cu`, `.cuh`).
fn sources(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu" || x == "cuh"))
        .collect();
    v.sort();
    Ok(v)
}

/// `cargo xtask mutants [FILTER]`: all mutations, or those whose file or
/// description contains FILTER.
pub fn check(filter: Option<&str>) -> Result<(), String> {
    let dir = root().join("gpu").join("kernels");
    let mut before = vec![];
    for f in sources(&dir)? {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        before.push((f, text));
    }
    // the unmutated sources must pass first
    println!("mutants: baseline (unmodified sources)");
    let base = failing_tests()?;
    if !base.is_empty() {
        return Err(format!("the GPU tests fail without any mutation: {base:?}"));
    }
    let mut rows = vec![];
    let mut missed = vec![];
    let chosen: Vec<&Mutation> = MUTATIONS
        .iter()
        .filter(|m| filter.is_none_or(|f| m.file.contains(f) || m.what.contains(f)))
        .collect();
    if chosen.is_empty() {
        return Err(format!("no mutation matches {filter:?}"));
    }
    for m in chosen.iter().copied() {
        let t = Instant::now();
        let failed = mutate(&dir, m)?;
        println!(
            "mutants: {:<11} {:<52} {:>5.1} s: {}",
            m.file,
            m.what,
            t.elapsed().as_secs_f64(),
            if failed.is_empty() {
                "NOT CAUGHT".to_string()
            } else {
                format!("{} failed", failed.len())
            }
        );
        if failed.is_empty() {
            missed.push(m.what);
        }
        rows.push((m, failed));
    }
    println!("\n| file | broken line | caught by |\n|---|---|---|");
    for (m, failed) in &rows {
        let by = if failed.is_empty() {
            "**not caught**".to_string()
        } else {
            failed
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {} | `{}` → `{}` | {by} |",
            m.file,
            m.from.trim().replace('\n', " "),
            m.to.trim().replace('\n', " ")
        );
    }
    // the sources are back as they were
    for (path, text) in &before {
        if std::fs::read_to_string(path).ok().as_ref() != Some(text) {
            return Err(format!("{} was not restored: check it", path.display()));
        }
    }
    if missed.is_empty() {
        println!("\nmutants: all {} mutations caught", rows.len());
        Ok(())
    } else {
        Err(format!("mutations not caught: {missed:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mutation applies to exactly one place of today's sources.
    #[test]
    fn every_mutation_applies_once() {
        let dir = root().join("gpu").join("kernels");
        for m in MUTATIONS {
            let text = std::fs::read_to_string(dir.join(m.file)).unwrap();
            assert_eq!(text.matches(m.from).count(), 1, "{}: {:?}", m.file, m.from);
            assert_ne!(m.from, m.to);
        }
        // at least one in every CUDA source
        for p in sources(&dir).unwrap() {
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(MUTATIONS.iter().any(|m| m.file == f), "no mutation of {f}");
        }
    }
}
