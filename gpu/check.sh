#!/usr/bin/env bash
# gpu/check.sh: the GPU checks of fdgr, in one short run (a few minutes).
#
# For a machine with an NVIDIA GPU, CUDA 13.0, driver 580 and PyTorch; no
# cargo, no network. Needs the release binary (built elsewhere, carried
# here): target/release/fdgr, or $FDGR.
#
# Budget: about 9.5 minutes at most (CHECK_BUDGET_S), usually 5 to 7.
#
# 1. cross-check: 20 steps of every method on 784-512-512-10, batch 128,
#    from the same init and batches, GPU against the CPU kernel; max
#    relative difference of the weights (f32 target <= 1e-4), gated on
#    tanh; a ReLU run is printed for information (kinks, see below).
#    `fdgr crosscheck` prints one JSON line per method. The same, gated
#    too, training the last two layers only (`--train-layers last:2`: the
#    first layer frozen, read from its own device buffer; the methods
#    without an exact Hessian product).
# 2. speed: ms per step of sgd / db / fgr / sam on 3072-512-512-512-10 b128
#    and 4096-4096-4096-10 b4096 (`fdgr bench --backend gpu ... --json`),
#    next to PyTorch eager doing the same steps (gpu/torch_bench.py), and
#    the GFLOP/s of the matrix products against plain cuBLAS SGEMMs of the
#    same sizes (torch.mm, TF32 off).
# 3. conv nets: 20 steps of every method on ResNet-20 (CIFAR shape),
#    batch 128, GPU against the CPU kernel on all cores (`fdgr crosscheck
#    --model resnet20`), gated on the step losses (1e-4 relative: ReLU and
#    max-free BN nets flip kinks too, so the weights are reported, not
#    gated); which convolution engine ran (cuDNN or the im2col + cuBLAS
#    fallback) is printed at start-up. Speed: ResNet-18 (CIFAR) batch 128
#    sgd / fgr / db in f32 and bf16, and WRN-28-10 batch 128 sgd, fdgr
#    against PyTorch eager (gpu/torch_conv_bench.py, the steps of
#    bench/torch_steps.py on CUDA), as steps/s.
#
# Exit status: 1 if the cross-check fails (or does not run), 3 if an fdgr
# benchmark fails, 0 otherwise (a missing PyTorch only drops its columns).
set -uo pipefail
cd "$(dirname "$0")/.."

FDGR=${FDGR:-target/release/fdgr}
PY=${PYTHON:-python3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# one run of at most ~7.5 minutes, whatever hangs: each command gets the
# smaller of its own cap and what is left of the budget
DEADLINE=$((SECONDS + ${CHECK_BUDGET_S:-570}))
cap() { local left=$((DEADLINE - SECONDS)); [ "$left" -lt "$1" ] && echo $((left > 5 ? left : 5)) || echo "$1"; }

# NVRTC and cuBLAS are loaded at run time by name (libnvrtc.so.13,
# libcublas.so.13): put the CUDA toolkit's lib64 on the loader path.
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda-13.0 /usr/local/cuda /opt/cuda; do
    if [ -n "$d" ] && ls "$d"/lib64/libnvrtc.so* >/dev/null 2>&1; then
        export LD_LIBRARY_PATH="$d/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "CUDA libraries: $d/lib64"
        break
    fi
done

if [ ! -x "$FDGR" ]; then
    echo "check.sh: $FDGR not found (build it with: cargo build --release)" >&2
    exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo
echo "== cross-check: GPU vs CPU kernel, 784-512-512-10, batch 128, 20 steps =="
# The gate is tanh: with ReLU, f32 rounding differences can flip a unit
# across the kink and move the weights by ~1e-3 relative even between two
# correct implementations, so the ReLU run is reported, not gated.
timeout "$(cap 180)" "$FDGR" crosscheck --model 784-512-512-10 --act tanh --batch 128 --steps 20 \
    >"$OUT/cross.txt" 2>"$OUT/cross.err"
cross_rc=$?
grep '^{' "$OUT/cross.txt" >"$OUT/cross.jsonl" || true
timeout "$(cap 120)" "$FDGR" crosscheck --model 784-512-512-10 --act relu --batch 128 --steps 20 \
    >"$OUT/cross_relu.txt" 2>&1
grep '^{' "$OUT/cross_relu.txt" >"$OUT/cross_relu.jsonl" || true
timeout "$(cap 90)" "$FDGR" crosscheck --model 784-512-512-10 --act tanh --batch 128 --steps 20 \
    --train-layers last:2 >"$OUT/cross_part.txt" 2>"$OUT/cross_part.err"
part_rc=$?
grep '^{' "$OUT/cross_part.txt" >>"$OUT/cross.jsonl" || true
[ "$cross_rc" -eq 0 ] && cross_rc=$part_rc

echo
echo "== speed: fdgr (GPU) =="
bench_rc=0
for cfg in 3072-512-512-512-10:128 4096-4096-4096-10:4096; do
    model=${cfg%%:*}
    batch=${cfg##*:}
    for m in sgd db fgr sam; do
        if ! timeout "$(cap 60)" "$FDGR" bench --backend gpu --model "$model" --batch "$batch" --method "$m" --json \
            >"$OUT/b.txt" 2>"$OUT/b.err"; then
            echo "fdgr bench $model b$batch $m FAILED:" >&2
            tail -n 5 "$OUT/b.err" "$OUT/b.txt" >&2
            bench_rc=3
        fi
        grep '^{' "$OUT/b.txt" | tail -n 1 >>"$OUT/fdgr.jsonl" || true
        echo "  $model b$batch $m done"
    done
done

echo
echo "== speed: PyTorch eager and cuBLAS SGEMM =="
if timeout "$(cap 200)" "$PY" gpu/torch_bench.py >"$OUT/torch.jsonl" 2>"$OUT/torch.err"; then
    echo "  done"
else
    echo "  PyTorch reference FAILED or missing (columns left empty):" >&2
    tail -n 5 "$OUT/torch.err" >&2
fi

echo
echo "== conv nets: cross-check ResNet-20 b128, 20 steps, every method (GPU vs CPU kernel) =="
timeout "$(cap 200)" "$FDGR" crosscheck --model resnet20 --input 3x32x32 --classes 10 --batch 128 --steps 20 \
    >"$OUT/cross_conv.txt" 2>"$OUT/cross_conv.err"
grep '^{' "$OUT/cross_conv.txt" >"$OUT/cross_conv.jsonl" || true
grep -i 'GPU:' "$OUT/cross_conv.err" | head -n 2

echo
echo "== conv nets: speed, fdgr (GPU) =="
for cfg in resnet18:sgd:f32 resnet18:fgr:f32 resnet18:db:f32 resnet18:sgd:bf16 resnet18:fgr:bf16 resnet18:db:bf16 wrn-28-10:sgd:f32 wrn-28-10:fgr:f32; do
    IFS=: read -r model m prec <<<"$cfg"
    if ! timeout "$(cap 60)" "$FDGR" bench --backend gpu --model "$model" --input 3x32x32 --classes 10 \
        --batch 128 --method "$m" --precision "$prec" --repeats 20 --warmup 3 --json \
        >"$OUT/cb.txt" 2>"$OUT/cb.err"; then
        echo "fdgr bench $model $m $prec FAILED:" >&2
        tail -n 5 "$OUT/cb.err" "$OUT/cb.txt" >&2
        bench_rc=3
    fi
    grep '^{' "$OUT/cb.txt" | tail -n 1 >>"$OUT/fdgr_conv.jsonl" || true
    echo "  $model $m $prec done"
done

echo
echo "== conv nets: speed, PyTorch eager =="
if timeout "$(cap 150)" "$PY" gpu/torch_conv_bench.py --models resnet18 --methods sgd,fgr,db --precisions f32,bf16 \
    >"$OUT/torch_conv.jsonl" 2>"$OUT/torch_conv.err" &&
   timeout "$(cap 60)" "$PY" gpu/torch_conv_bench.py --models wrn-28-10 --methods sgd,fgr --precisions f32 \
    >>"$OUT/torch_conv.jsonl" 2>>"$OUT/torch_conv.err"; then
    echo "  done"
else
    echo "  PyTorch conv reference FAILED or missing (columns left empty):" >&2
    tail -n 5 "$OUT/torch_conv.err" >&2
fi

"$PY" - "$OUT" "$cross_rc" <<'EOF'
import json, sys, os
out, cross_rc = sys.argv[1], int(sys.argv[2])

def lines(name):
    p = os.path.join(out, name)
    rows = []
    if os.path.exists(p):
        for l in open(p):
            l = l.strip()
            if l.startswith("{"):
                try:
                    rows.append(json.loads(l))
                except ValueError:
                    pass
    return rows

def f(x, fmt):
    if x is None:
        width = "".join(c for c in fmt.split(".")[0] if c.isdigit())
        return "-".rjust(int(width) if width else 1)
    return format(x, fmt)

cross = lines("cross.jsonl")
print("\n== cross-check: max relative difference after 20 steps (GPU vs CPU kernel) ==")
print(f"{'act':<5} {'method':<7} {'weights':>10} {'losses':>10} {'target':>8}  result")
for r in cross:
    part = "  (--train-layers last:2)" if "--train-layers" in r.get("model", "") else ""
    print(f"{r.get('act', '?'):<5} {r['method']:<7} {f(r['max_rel_diff'], '10.2e')} {f(r['loss_rel_diff'], '10.2e')} "
          f"{f(r['tolerance'], '8.0e')}  {'ok' if r['passed'] else 'FAILED'}{part}")
if any(r.get("act", "tanh") != "tanh" for r in cross):
    print("WARNING: the gated cross-check did not run with tanh (does `fdgr crosscheck` take --act?)")
for r in lines("cross_relu.jsonl"):
    print(f"{r.get('act', '?'):<5} {r['method']:<7} {f(r['max_rel_diff'], '10.2e')} {f(r['loss_rel_diff'], '10.2e')} "
          f"{'-':>8}  info (ReLU kinks: not gated)")
if not cross:
    print("(no results)")
    sys.stdout.write(open(os.path.join(out, "cross.txt")).read()[-2000:])
    sys.stdout.write(open(os.path.join(out, "cross.err")).read()[-2000:])

fd = {(r["model"], r["batch"], r["method"]): r for r in lines("fdgr.jsonl")}
th = {(r["model"], r["batch"], r["method"]): r for r in lines("torch.jsonl") if r["kind"] == "bench"}
sg = {(r["model"], r["batch"]): r for r in lines("torch.jsonl") if r["kind"] == "sgemm"}
print("\n== speed: ms per step (median, CUDA events); GFLOP/s of the matrix products ==")
print(f"{'model':<20} {'batch':>5} {'method':<6} {'fdgr ms':>9} {'torch ms':>9} {'torch/fdgr':>10} "
      f"{'fdgr GF/s':>10} {'torch GF/s':>10} {'SGEMM GF/s':>10} {'fdgr/SGEMM':>10}")
for key in sorted(set(fd) | set(th), key=lambda k: (k[1], k[0], ["sgd", "db", "fgr", "sam"].index(k[2]) if k[2] in ["sgd", "db", "fgr", "sam"] else 9)):
    a, b, s = fd.get(key), th.get(key), sg.get(key[:2])
    ratio = b["ms_median"] / a["ms_median"] if a and b else None
    eff = a["gflops"] / s["gflops"] if a and s else None
    print(f"{key[0]:<20} {key[1]:>5} {key[2]:<6} {f(a and a['ms_median'], '9.3f')} {f(b and b['ms_median'], '9.3f')} "
          f"{f(ratio, '10.2f')} {f(a and a['gflops'], '10.0f')} {f(b and b['gflops'], '10.0f')} "
          f"{f(s and s['gflops'], '10.0f')} {f(eff, '10.2f')}")
dev = next((r.get("device") for r in fd.values()), None)
if dev:
    print(f"device: {dev}; fdgr: FP32 SGEMM (TF32 off); sam waits once per step for ||g||")
conv = lines("cross_conv.jsonl")
print("\n== conv nets: ResNet-20 b128, 20 steps, GPU vs CPU kernel (gate: step losses <= 1e-4 relative) ==")
print(f"{'method':<7} {'losses':>10} {'weights':>10} {'BN stats':>10}  result")
for r in conv:
    good = r["loss_rel_diff"] is not None and r["loss_rel_diff"] <= 1e-4
    print(f"{r['method']:<7} {f(r['loss_rel_diff'], '10.2e')} {f(r['max_rel_diff'], '10.2e')} "
          f"{f(r.get('state_rel_diff'), '10.2e')}  {'ok' if good else 'FAILED'}")
if not conv:
    print("(no results)")
    sys.stdout.write(open(os.path.join(out, "cross_conv.err")).read()[-2000:])
conv_ok = len(conv) == 8 and all(r["loss_rel_diff"] is not None and r["loss_rel_diff"] <= 1e-4 for r in conv)

fc = {(r["model"], r["method"], r.get("precision", "f32")): r for r in lines("fdgr_conv.jsonl")}
tc = {(r["model"], r["method"], r.get("precision", "f32")): r for r in lines("torch_conv.jsonl") if r.get("kind") == "bench"}
print("\n== conv nets: steps/s, batch 128 (CUDA events, median) ==")
print(f"{'model':<10} {'method':<6} {'prec':<5} {'fdgr':>8} {'torch':>8} {'fdgr/torch':>10} {'vs fdgr sgd':>11}  conv engine")
for key in sorted(set(fc) | set(tc)):
    a, b = fc.get(key), tc.get(key)
    sa = a and 1e3 / a["ms_median"]
    sb = b and b["steps_per_s"]
    sgd = fc.get((key[0], "sgd", key[2]))
    rel = a["ms_median"] / sgd["ms_median"] if a and sgd else None
    print(f"{key[0]:<10} {key[1]:<6} {key[2]:<5} {f(sa, '8.1f')} {f(sb, '8.1f')} "
          f"{f(sa / sb if sa and sb else None, '10.2f')} {f(rel, '11.2f')}  {a.get('conv', '-') if a else '-'}")

ok = cross_rc == 0 and len(cross) > 0 and all(r["passed"] for r in cross)
print("\ncross-check (MLP):", "PASSED" if ok else "FAILED")
print("cross-check (ResNet-20):", "PASSED" if conv_ok else "FAILED")
sys.exit(0 if ok and conv_ok else 1)
EOF
table_rc=$?
if [ "$table_rc" -ne 0 ]; then exit 1; fi
exit "$bench_rc"
