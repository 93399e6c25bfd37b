#!/bin/bash
# One unattended GPU run of everything the project measures on a GPU (issue 12), ours first and nnU-Net 2.8.1's
# last, inside a total time budget, writing logs and JSON under $OUT as it goes.
#
#   OUT="$OUT" bash benchmarks/gpu_suite.sh      on the GPU machine (the device tool: carry [".sitepack"],
#                                                timeout_s 600)
#   bash benchmarks/gpu_suite.sh --dry-run       here, on a CPU: the same steps at tiny scale (or DRY_RUN=1)
#   bash benchmarks/gpu_suite.sh --pack [--with-timm]
#                                                here, before the device run: build .sitepack (see below)
#
# Steps, in this order (ours first, most wanted first; nnU-Net's last), each under its own `timeout`; a failed step
# is recorded and the next one runs:
#   setup               unpack .sitepack onto PYTHONPATH, put this checkout on PYTHONPATH (no install: offline),
#                       probe versions (env.json); start writing the predict case in the background (CPU only)
#   pytest              pytest -m gpu
#   profile             step_profile.py's breakdown of one eager step of each tool on the reference network, by the
#                       same rules (convolution, normalisation, loss, optimiser, ... per phase; convolution kernels by
#                       precision): ours in bf16 and in fp16 with loss scaling, nnU-Net's own fp16 (profile.json)
#   train_ref_eager     benchmarks/train_step.py --device cuda, reference network (patch 56x160x192, batch 2): pure
#                       step + full iteration (sampling, on-device augmentation, loss, backward); 100-iteration epochs
#   train_ref_compile   the same with --compile and a real 250-iteration epoch (the epoch target)
#   predict             benchmarks/predict.py --devices cuda --breakdown: one 512x512x210 synthetic CT, with and
#                       without mirroring, whole process, plus the in-process stage times (ours)
#   train_hybrid_eager  train_step.py --strategy hybrid, same topology, 30-iteration epochs (scaled to 250)
#   train_hybrid_compile  the same with --compile --compile-scope blocks (regional compilation: each conv block and
#                       fusion unit; the whole-network compile of the hybrid took over 66 s on an H200)
#   ddp                 2-process torchrun (NCCL) smoke run of covtransfer_train, only if the machine has 2 GPUs
#   nnunet_train        benchmarks/nnunet_train_step.py: nnU-Net's own step, compiled (its GPU default) with a
#                       250-iteration epoch through its own data loader, then eager (step only)
#   nnunet_predict      benchmarks/predict.py --tools nnunetv2: nnU-Net's predictor, same case, same model size
#
# Time: the whole run stays inside SUITE_BUDGET_S (default 580 s; give the device call timeout_s=600). Each step
# gets min(its own cap, what is left minus the minimum that the later steps need); a step whose share falls below
# its own minimum is skipped and recorded as such. Results are written as each part finishes, so a step cut off by
# its timeout keeps what it measured. SUITE_STEPS="pytest predict" (or --only pytest,predict; a prefix such as
# "train" matches several) runs a subset, e.g. for a short second run.
#
# What comes back ($OUT, 7 files, no folders): suite.log (everything printed), results.json (the collated figures:
# GPU name, torch version, date, each step's status, ours vs nnU-Net; copy it to
# benchmarks/results/gpu_<card>_<date>.json), env.json, train.json, predict.json, nnunet_train.json (raw outputs),
# profile.json (the step breakdowns).
#
# .sitepack: the GPU image has torch (and, as listed in the device notes, torchvision and timm) but not SimpleITK,
# batchgenerators, nnU-Net, ... `--pack` runs ../shared/tools/device-sitepack.sh --with-nnunet, which writes
# .sitepack/site.tar.xz (~40 MB). nnU-Net's dynamic_network_architectures imports timm (< 1.0.23), which imports
# torchvision; setup checks that the image provides both. If it does not, build the pack with `--pack --with-timm`:
# that adds the wheels timm==$TIMM_VERSION (default 1.0.22, PyPI) and torchvision==$TORCHVISION_VERSION (default
# 0.26.0, the build for the image's torch 2.11; from https://download.pytorch.org/whl/$TORCH_CUDA_TAG, default cu130)
# to .sitepack/wheels/, and setup installs them onto PYTHONPATH only when the image lacks them.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
DRY_RUN=${DRY_RUN:-0}
MODE=run
WITH_TIMM=0
STEPS=${SUITE_STEPS:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --pack) MODE=pack ;;
    --with-timm) WITH_TIMM=1 ;;
    --only) STEPS=${2//,/ }; shift ;;
    --budget) SUITE_BUDGET_S=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# ---------------------------------------------------------------------------------------------- --pack (CPU side)
if [ "$MODE" = pack ]; then
  set -e
  "$ROOT/../shared/tools/device-sitepack.sh" --with-nnunet
  if [ "$WITH_TIMM" = 1 ]; then
    P=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    mkdir -p .sitepack/wheels
    python3 -m pip download -q --no-deps --only-binary=:all: "${P[@]}" -d .sitepack/wheels \
      "timm==${TIMM_VERSION:-1.0.22}"
    python3 -m pip download -q --no-deps --only-binary=:all: "${P[@]}" -d .sitepack/wheels \
      --index-url "https://download.pytorch.org/whl/${TORCH_CUDA_TAG:-cu130}" \
      "torchvision==${TORCHVISION_VERSION:-0.26.0}"
  fi
  du -sh .sitepack
  echo "carry .sitepack in the device call (it must stay under 64 MiB with the working tree)"
  exit 0
fi

# ---------------------------------------------------------------------------------------------- run
if [ "$DRY_RUN" = 1 ]; then
  OUT=${OUT:-/tmp/gpu_suite_dry/out}
  PY=${SUITE_PYTHON:-$ROOT/.venv/bin/python}
  NNPY=${SUITE_NNUNET_PYTHON:-/work/nnvenv/bin/python}
  WORK=${SUITE_WORK:-/tmp/gpu_suite_dry/work}
  rm -rf "$WORK"
else
  if [ -z "${OUT:-}" ]; then echo "OUT is not set (the device tool sets it); set OUT=/some/folder" >&2; exit 2; fi
  PY=${SUITE_PYTHON:-python3}
  NNPY=$PY
  WORK=$(mktemp -d /tmp/gpu_suite.XXXXXX)
fi
mkdir -p "$OUT" "$WORK"
BUDGET=${SUITE_BUDGET_S:-$([ "$DRY_RUN" = 1 ] && echo 900 || echo 580)}
T0=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec > >(tee -a "$OUT/suite.log") 2>&1
TEE_PID=$!
echo "gpu_suite: $(date -u +%FT%TZ), dry run $DRY_RUN, budget ${BUDGET} s, work $WORK, out $OUT"

elapsed() { echo $(( $(date +%s) - T0 )); }
record() {  # name status rc seconds timeout note
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$WORK/steps.tsv"
}
wanted() { [ -z "$STEPS" ] && return 0; for s in $STEPS; do case "$1" in $s|$s*) return 0 ;; esac; done; return 1; }
planned() {  # wanted, and not known to be skipped for want of a second GPU or of nnU-Net
  wanted "$1" || return 1
  case "$1" in ddp) [ "${SKIP_DDP:-0}" != 1 ] ;; nnunet_*) [ -n "$NNPY" ] ;; *) true ;; esac
}

# Steps in order with [cap seconds, minimum seconds]; the minimum is reserved for each later step still to run.
# Measured on an H200 (2026-11-27): setup 31, pytest 78, ref eager 42, ref compile 95, predict 58, hybrid eager 29;
# the hybrid's compile (over 66 s), nnU-Net's compiled step and epoch (over 120 s) and nnU-Net's two predictions
# (over 50 s) did not fit. A second call with --only "train_hybrid_compile nnunet" measures what is missing.
ORDER="pytest profile train_ref_eager train_ref_compile predict train_hybrid_eager train_hybrid_compile ddp nnunet_train"
ORDER="$ORDER nnunet_predict"
declare -A CAP=([pytest]=120 [profile]=150 [train_ref_eager]=80 [train_ref_compile]=160 [predict]=120 [train_hybrid_eager]=50
                [train_hybrid_compile]=120 [ddp]=90 [nnunet_train]=200 [nnunet_predict]=150)
declare -A MIN=([pytest]=40 [profile]=60 [train_ref_eager]=35 [train_ref_compile]=90 [predict]=45 [train_hybrid_eager]=20
                [train_hybrid_compile]=60 [ddp]=40 [nnunet_train]=120 [nnunet_predict]=90)
reserve_after() {  # the minimum seconds of the wanted steps after $1 that have not run
  local after=0 total=0 s
  for s in $ORDER; do
    if [ "$after" = 1 ] && planned "$s"; then total=$((total + MIN[$s])); fi
    [ "$s" = "$1" ] && after=1
  done
  echo "$total"
}

run_step() {  # name command...: run under its share of the budget, record status, collect results
  local name=$1; shift
  wanted "$name" || return 0
  local left=$(( BUDGET - $(elapsed) - $(reserve_after "$name") - 10 ))
  local t=$(( CAP[$name] < left ? CAP[$name] : left ))
  if [ "$t" -lt "${MIN[$name]}" ]; then
    echo "=== $name: SKIPPED, ${t} s of the budget left for it (< ${MIN[$name]} s); $(elapsed) s elapsed"
    record "$name" skipped "" 0 "$t" "budget"
    collect
    return 0
  fi
  echo
  echo "=== $name (timeout ${t} s; $(elapsed) s elapsed): $*"
  local start=$(date +%s) rc status
  timeout -k 10 "$t" "$@"
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  echo "=== $name: $status (rc $rc) in $(( $(date +%s) - start )) s"
  record "$name" "$status" "$rc" "$(( $(date +%s) - start ))" "$t"
  collect
}

# ---------------------------------------------------------------------------------------------- collection
cat > "$WORK/collect.py" <<'PYEOF'
"""Collate the raw outputs of gpu_suite.sh into $OUT/results.json and print the comparison table."""
import json, os, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, work, budget, elapsed, final = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


env = load(out / "env.json") or {}
steps = []
if (work / "steps.tsv").is_file():
    for line in (work / "steps.tsv").read_text().splitlines():
        name, status, rc, seconds, timeout, note = (line.split("\t") + [""] * 6)[:6]
        steps.append({"name": name, "status": status, "rc": int(rc) if rc else None, "seconds": int(seconds),
                      "timeout_s": int(timeout), "note": note})

train = {}
for key in ("ref_eager", "ref_compile", "hybrid_eager", "hybrid_compile"):
    report = load(work / f"train_{key}.json")
    if report:
        net, mode = key.split("_")
        train[f"{'reference' if net == 'ref' else 'hybrid'}/{mode}"] = report
if train:
    (out / "train.json").write_text(json.dumps(train, indent=2) + "\n")

profiles = {f"covtransfer {path.stem.rsplit('_', 1)[-1]}": next(iter(load(path).get("networks", {}).values()), {})
            .get("profile") for path in sorted(work.glob("profile_ours_*.json")) if load(path)}
nnunet_profile = load(work / "profile_nnunet.json")
if nnunet_profile:
    eager = nnunet_profile.get("modes", {}).get("eager") or {}
    profiles[f"nnunetv2 {'fp16' if str(eager.get('amp')).startswith('fp16') else 'fp32'}"] = eager.get("profile")
if profiles:
    (out / "profile.json").write_text(json.dumps(profiles, indent=2) + "\n")

predict = (load(work / "predict_ours.json") or []) + (load(work / "predict_nnunet.json") or [])
if predict:
    (out / "predict.json").write_text(json.dumps(predict, indent=2) + "\n")
nnunet_train = load(out / "nnunet_train.json")

tests = []
if (work / "pytest.xml").is_file():
    try:
        for case in ET.parse(work / "pytest.xml").getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
            tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                          "seconds": round(float(case.get("time", 0)), 1)})
    except ET.ParseError:
        pass


def net(key):
    report = train.get(key) or {}
    return next(iter(report.get("networks", {}).values()), {})


def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def seconds(tool, mirroring):
    rows = [r for r in predict if r.get("tool") == tool and r.get("mirroring") == mirroring]
    return rows[0].get("seconds") if rows else None


nn_modes = (nnunet_train or {}).get("modes", {})
table = [
    {"what": "training step, reference, eager (ms)", "covtransfer": get(net("reference/eager"), "step_ms", "mean"),
     "nnunetv2": get(nn_modes, "eager", "step_ms", "mean"), "nnunetv2_published": 62},
    {"what": "training step, reference, compiled (ms)",
     "covtransfer": get(net("reference/compile"), "step_ms", "mean"),
     "nnunetv2": get(nn_modes, "compile", "step_ms", "mean"), "nnunetv2_published": 40, "target_h200": 30},
    {"what": "250-iteration epoch with data loading, eager (s; from 100)",
     "covtransfer": get(net("reference/eager"), "iteration_ms", "epoch_250_s"),
     "nnunetv2": get(nn_modes, "eager", "epoch", "epoch_250_s")},
    {"what": "250-iteration epoch with data loading, compiled (s)",
     "covtransfer": get(net("reference/compile"), "iteration_ms", "epoch_250_s"),
     "nnunetv2": get(nn_modes, "compile", "epoch", "epoch_250_s"), "nnunetv2_published": 27.5, "target_h200": 11},
    {"what": "training step, hybrid, eager (ms)", "covtransfer": get(net("hybrid/eager"), "step_ms", "mean")},
    {"what": "training step, hybrid, compiled per block (ms)",
     "covtransfer": get(net("hybrid/compile"), "step_ms", "mean")},
    {"what": "hybrid, compilation and warm-up steps, per block (s)",
     "covtransfer": get(net("hybrid/compile"), "step_ms", "warmup_s")},
    {"what": "250-iteration epoch, hybrid, compiled (s; from 30)",
     "covtransfer": get(net("hybrid/compile"), "iteration_ms", "epoch_250_s")},
    {"what": "prediction, whole process, mirroring (s)", "covtransfer": seconds("covtransfer", True),
     "nnunetv2": seconds("nnunetv2", True), "nnunetv2_published": 38.7, "target_h200": 8},
    {"what": "prediction, whole process, no mirroring (s)", "covtransfer": seconds("covtransfer", False),
     "nnunetv2": seconds("nnunetv2", False)},
]
results = {
    "suite": "benchmarks/gpu_suite.sh", "complete": final, "dry_run": env.get("dry_run"),
    "date": env.get("date"), "gpu": env.get("gpu"), "gpu_count": env.get("gpu_count"),
    "torch": env.get("torch"), "cuda": env.get("cuda"), "python": env.get("python"), "cpus": env.get("cpus"),
    "packages": env.get("packages"), "budget_s": int(budget), "elapsed_s": int(elapsed),
    "steps": steps, "tests": tests, "table": table,
    "covtransfer": {"train": train, "predict": [r for r in predict if r.get("tool") == "covtransfer"]},
    "nnunetv2": {"train": nnunet_train, "predict": [r for r in predict if r.get("tool") == "nnunetv2"]},
    "ddp": load(work / "ddp.json"),
}
(out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
if final:
    print(f"\n=== gpu_suite summary: {env.get('gpu')}, torch {env.get('torch')}, {env.get('date')}, "
          f"{elapsed} s of {budget} s")
    for s in steps:
        print(f"  {s['name']:<22} {s['status']:<8} {s['seconds']:>4} s" + (f"  ({s['note']})" if s["note"] else ""))
    for t in tests:
        print(f"  test {t['outcome']:<8} {t['test']}")
    fmt = lambda v: "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)
    print(f"  {'':<56} {'ours':>8} {'nnU-Net':>8} {'(publ.)':>8} {'target':>7}")
    for row in table:
        print(f"  {row['what']:<56} {fmt(row.get('covtransfer')):>8} {fmt(row.get('nnunetv2')):>8} "
              f"{fmt(row.get('nnunetv2_published')):>8} {fmt(row.get('target_h200')):>7}")
    ddp = results["ddp"]
    if ddp:
        print(f"  ddp: {ddp}")
PYEOF
collect() { "$PY" "$WORK/collect.py" "$OUT" "$WORK" "$BUDGET" "$(elapsed)" "${1:-0}" || echo "(collect failed)"; }

# ---------------------------------------------------------------------------------------------- setup
echo
echo "=== setup ($(elapsed) s elapsed)"
if [ "$DRY_RUN" = 1 ]; then
  if [ -f .sitepack/site.tar.xz ]; then
    echo "dry run: .sitepack/site.tar.xz is $(du -h .sitepack/site.tar.xz | cut -f1); its packages:"
    xz -dc .sitepack/site.tar.xz | tar -tf - | awk -F/ 'NF > 2 && $2 ~ /dist-info$/ {print $2}' | sort -u \
      | sed 's/\.dist-info$//' | tr '\n' ' '; echo
  else
    echo "dry run: no .sitepack here (build it with: bash benchmarks/gpu_suite.sh --pack)"
  fi
  echo "dry run: not unpacking or installing; ours run with $PY, nnU-Net with $NNPY"
  if ! { [ -x "$NNPY" ] && "$NNPY" -c "import nnunetv2" 2>/dev/null; }; then
    echo "dry run: $NNPY cannot import nnunetv2: the nnU-Net steps are skipped"; NNPY=""
  fi
else
  if [ ! -f .sitepack/site.tar.xz ]; then
    echo "setup: .sitepack/site.tar.xz is missing: build it here with 'bash benchmarks/gpu_suite.sh --pack'" \
         "and name .sitepack in the device call's carry"
    record setup failed 1 "$(elapsed)" 0 "no .sitepack"; collect 1; exit 1
  fi
  S=$(mktemp -d /tmp/sitepack.XXXXXX)
  if ! xz -dc .sitepack/site.tar.xz | tar -C "$S" -xf -; then
    record setup failed 1 "$(elapsed)" 0 "unpack"; collect 1; exit 1
  fi
  # covtransfer runs from this checkout (no install: pip would fetch setuptools for the build, and the machine is
  # offline); every step calls it through python -m or python -c, never through a console script.
  export PYTHONPATH="$ROOT:$S${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import torchvision, timm" 2>/dev/null; then
    if ls .sitepack/wheels/*.whl >/dev/null 2>&1; then
      echo "setup: the image lacks torchvision/timm; installing .sitepack/wheels onto PYTHONPATH"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$S" .sitepack/wheels/*.whl
    else
      echo "setup: note: the image lacks torchvision or timm and .sitepack has no wheels/. This suite's nnU-Net" \
           "steps do not need them (nnUNetTrainer is imported directly; the predictor's lookup of nnUNetTrainer" \
           "stops before the timm-importing trainers); looking up any other trainer would. To carry them: build" \
           "the pack with 'bash benchmarks/gpu_suite.sh --pack --with-timm'"
    fi
  fi
fi
"$PY" - "$OUT/env.json" "$DRY_RUN" "$NNPY" <<'PYEOF'
import datetime, importlib, json, os, platform, subprocess, sys
import torch
env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "dry_run": sys.argv[2] == "1", "python": platform.python_version(), "torch": torch.__version__,
       "cuda": torch.version.cuda, "cpus": os.cpu_count(), "gpu_count": torch.cuda.device_count(),
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU: " + platform.machine() + ")"}
packages = {}
for name in ("covtransfer", "numpy", "scipy", "SimpleITK", "torchvision", "timm", "triton", "nnunetv2",
             "dynamic_network_architectures", "batchgeneratorsv2", "batchgenerators", "acvl_utils", "blosc2"):
    try:
        module = importlib.import_module(name)
        packages[name] = getattr(module, "__version__", "present")
    except Exception as error:  # noqa: BLE001 - a probe: record why
        packages[name] = f"missing ({type(error).__name__}: {str(error)[:80]})"
if sys.argv[3] and sys.argv[3] != sys.executable:  # the dry run's nnU-Net venv
    probe = "import nnunetv2, importlib.metadata as m; print(m.version('nnunetv2'))"
    packages["nnunetv2"] = subprocess.run([sys.argv[3], "-c", probe], capture_output=True, text=True).stdout.strip()
env["packages"] = packages
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                                        "--format=csv,noheader"], capture_output=True, text=True,
                                       timeout=20).stdout.strip().splitlines()
except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env, indent=1))
PYEOF
[ $? -eq 0 ] || { record setup failed 1 "$(elapsed)" 0 "probe"; collect 1; exit 1; }
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$DRY_RUN" != 1 ] && [ "$GPUS" -lt 1 ]; then
  echo "setup: no GPU visible to torch"; record setup failed 1 "$(elapsed)" 0 "no GPU"; collect 1; exit 1
fi
[ "$GPUS" -ge 2 ] || [ "$DRY_RUN" = 1 ] || SKIP_DDP=1
record setup ok 0 "$(elapsed)" 0 ""

if [ "$DRY_RUN" = 1 ]; then
  DEV=cpu; TRAIN_NET=(--networks cpu); TRAIN_ITERS=(--iters 1 --warmup 1 --num-workers 0 --threads 1)
  REF_EAGER_EPOCH=(--epoch-iters 2); REF_EPOCH=(--epoch-iters 2); HYB_EPOCH=(--epoch-iters 2)
  COMPILE_ENV=(env TORCHDYNAMO_DISABLE=1)  # the --compile plumbing, without compiling on a 2-core CPU
  PRED_ARGS=(--devices cpu --case tiny --cpu-topology tiny --cpu-tta)
  NN_TRAIN_ARGS=(--device cpu --network tiny --iters 2 --warmup 1 --epoch-iters 4 --epoch-warmup 1 --n-proc-da 1
                 --threads 1)
  PROFILE_AMPS="off"  # fp16 with loss scaling needs CUDA
else
  DEV=cuda; TRAIN_NET=(--networks reference); TRAIN_ITERS=(--iters 20 --warmup 5)
  REF_EAGER_EPOCH=(--epoch-iters 100); REF_EPOCH=(--epoch-iters 250); HYB_EPOCH=(--epoch-iters 30)
  COMPILE_ENV=()
  PRED_ARGS=(--devices cuda --case-index 11)  # 210 x 512 x 512 at 1.29 x 0.66 x 0.66 mm
  NN_TRAIN_ARGS=(--device cuda --network reference --iters 20 --warmup 5 --epoch-iters 250 --epoch-warmup 20)
  PROFILE_AMPS="bf16 fp16"
fi

# The predict case (a 210 x 512 x 512 synthetic CT; about 15 s) is written on the CPU while the first GPU steps run.
if wanted predict || wanted nnunet_predict; then
  timeout 300 "$PY" benchmarks/predict.py "${PRED_ARGS[@]}" --work "$WORK/predict" --prepare-only \
    > "$WORK/prepare.log" 2>&1 &
  PREPARE_PID=$!
fi

# ---------------------------------------------------------------------------------------------- ours
run_step pytest "$PY" -m pytest -m gpu -v -rfE -p no:cacheprovider --junitxml="$WORK/pytest.xml"

# One eager step of each tool under torch.profiler, grouped by the same rules: ours in each precision, then nnU-Net's.
# (timeout runs a program, so the step is a function run by bash -c; its arguments travel as space-free words.)
profile_steps() {
  local amp rc=0
  for amp in $PROFILE_AMPS; do
    # shellcheck disable=SC2086
    "$PY" benchmarks/train_step.py --device "$DEV" $PROFILE_TRAIN_ARGS --parts step profile --amp "$amp" \
      --out "$WORK/profile_ours_$amp.json" || rc=1
  done
  if [ -n "$NNPY" ]; then
    # shellcheck disable=SC2086
    "$NNPY" benchmarks/nnunet_train_step.py $PROFILE_NN_ARGS --modes eager --epoch-modes --profile \
      --out "$WORK/profile_nnunet.json" || rc=1
  fi
  return $rc
}
PROFILE_TRAIN_ARGS="${TRAIN_NET[*]} ${TRAIN_ITERS[*]}"; PROFILE_NN_ARGS="${NN_TRAIN_ARGS[*]}"
export -f profile_steps; export PY NNPY DEV WORK PROFILE_AMPS PROFILE_TRAIN_ARGS PROFILE_NN_ARGS
run_step profile bash -c profile_steps

TRAIN=("$PY" benchmarks/train_step.py --device "$DEV" "${TRAIN_NET[@]}" "${TRAIN_ITERS[@]}" --parts step iteration)
run_step train_ref_eager "${TRAIN[@]}" --strategy scratch "${REF_EAGER_EPOCH[@]}" --out "$WORK/train_ref_eager.json"
run_step train_ref_compile "${COMPILE_ENV[@]}" "${TRAIN[@]}" --strategy scratch "${REF_EPOCH[@]}" --compile \
  --out "$WORK/train_ref_compile.json"

if [ -n "${PREPARE_PID:-}" ]; then
  wait "$PREPARE_PID"; echo "predict case: $(tail -n 1 "$WORK/prepare.log") ($(elapsed) s elapsed)"
  cat "$WORK/prepare.log"
fi
run_step predict "$PY" benchmarks/predict.py "${PRED_ARGS[@]}" --work "$WORK/predict" --tools covtransfer --breakdown \
  --json "$WORK/predict_ours.json"

run_step train_hybrid_eager "${TRAIN[@]}" --strategy hybrid "${HYB_EPOCH[@]}" --out "$WORK/train_hybrid_eager.json"
run_step train_hybrid_compile "${COMPILE_ENV[@]}" "${TRAIN[@]}" --strategy hybrid "${HYB_EPOCH[@]}" --compile \
  --compile-scope blocks --out "$WORK/train_hybrid_compile.json"

# 2-process torchrun smoke run: tiny synthetic dataset, cpu preset, covtransfer_train under torchrun (NCCL on GPUs;
# gloo in the dry run). Passes when both ranks ran and rank 0's log says 2 processes.
ddp_smoke() {
  local d=$WORK/ddp dev=$1 cli
  cli() {
    local m=$1; shift
    "$PY" -c "import sys; from covtransfer.cli.$m import entry; sys.argv[0] = '$m'; entry()" "$@"
  }
  local roots=(--raw "$d/raw" --preprocessed "$d/preprocessed" --results "$d/results")
  cli make_synthetic covid -d 1 -n 6 --size tiny "${roots[@]}" || return 1
  cli plan_and_preprocess -d 1 --preset cpu -np 2 --fingerprint-voxels 100000 "${roots[@]}" || return 1
  local start=$(date +%s)
  OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29517 \
    -m covtransfer.cli.train -d 1 -f 0 --epochs 2 --iters-per-epoch 3 --val-iters 1 --device "$dev" \
    --num-workers 0 --save-every 1 --no-final-validation "${roots[@]}" || return 1
  local log
  log=$(ls "$d"/results/Dataset001_*/scratch/fold_0/training_log.txt 2>/dev/null | head -n 1)
  grep -q "2 process(es)" "$log" || { echo "ddp: rank 0's log does not say 2 processes"; return 1; }
  printf '{"backend": "%s", "processes": 2, "epochs": 2, "seconds": %s, "status": "ok"}\n' \
    "$([ "$dev" = cuda ] && echo nccl || echo gloo)" "$(( $(date +%s) - start ))" > "$WORK/ddp.json"
}
if [ "${SKIP_DDP:-0}" = 1 ]; then
  echo; echo "=== ddp: SKIPPED, this machine has $GPUS GPU(s); the NCCL smoke run needs 2"
  echo "{\"status\": \"skipped: $GPUS GPU(s)\"}" > "$WORK/ddp.json"
  wanted ddp && record ddp skipped "" 0 0 "$GPUS GPU(s)"
else
  export -f ddp_smoke; export WORK PY
  run_step ddp bash -c 'ddp_smoke "$0"' "$DEV"
fi

# ---------------------------------------------------------------------------------------------- nnU-Net (last)
if [ -n "$NNPY" ]; then
  run_step nnunet_train "$NNPY" benchmarks/nnunet_train_step.py "${NN_TRAIN_ARGS[@]}" --modes compile eager \
    --epoch-modes compile --work "$WORK/nnunet_train" --out "$OUT/nnunet_train.json"
  run_step nnunet_predict "$PY" benchmarks/predict.py "${PRED_ARGS[@]}" --work "$WORK/predict" --tools nnunetv2 \
    --nnunet-python "$NNPY" --json "$WORK/predict_nnunet.json"
else
  echo "=== nnunet_train, nnunet_predict: SKIPPED, no interpreter imports nnunetv2"
  record nnunet_train skipped "" 0 0 "no nnunetv2"; record nnunet_predict skipped "" 0 0 "no nnunetv2"
fi

collect 1
echo "gpu_suite: done in $(elapsed) s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null  # suite.log complete before the device tool collects $OUT
