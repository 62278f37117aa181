#!/usr/bin/env bash
# The GPU run of the benchmark suite: one prepared script for a lent H100/H200 box (about 10 minutes).
#
#   OUT=/results bash benchmarks/gpu.sh          # on the GPU box, from the repository root
#   GPU_SH_SMOKE=1 bash benchmarks/gpu.sh        # logic check on a CPU machine: device cpu, tiny sizes
#
# Needs the wheels of zennit 0.5.1 and quantus 0.6.0 in .whl/ (an ignored folder: carry it to the box);
# they are installed into $SITE (default /tmp/site) without network or dependencies. quantus needs
# opencv, scikit-image, scikit-learn, pandas, scipy and matplotlib at import time (over 130 MB of
# wheels, too many to carry): where the box lacks them the metrics benchmark runs without quantus,
# and env.md says why.
#
# Every step runs under its own timeout; its stdout (Markdown tables) goes to $OUT/<step>.md, its
# stderr to $OUT/<step>.err, both also to the terminal. A failed step does not stop the later ones;
# $OUT/status.txt lists each step's exit status and seconds, and the script exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ ${GPU_SH_SMOKE:-0} == 1 ]]; then
    PYTHON=${PYTHON:-.venv/bin/python}
    OUT=${OUT:-$(mktemp -d /tmp/gpu-sh-smoke-out.XXXXXX)}
    SITE=${SITE:-$(mktemp -d /tmp/gpu-sh-smoke-site.XXXXXX)}
    DEVICE=cpu
    LIMIT_SCALE=${LIMIT_SCALE:-5}  # a shared CPU is slow; the smoke run checks logic, not speed
    ATTRIBUTION_SIZES=(--model resnet18 vgg11_bn --batch 2 --size 32 --classes 10 --repeats 1 --warmup 1)
    METRICS_SIZES=(--model resnet18 --batch 2 --size 32 --classes 10 --steps 4 --patch 8 --repeats 1)
    CALLBACK_SIZES=(--epochs 1 --repeats 1)
    TRANSFORMER_SIZES=(--batch 1 --sequence 16 --repeats 1 --rounds 1 --no-memory --lxt-python none)
else
    PYTHON=${PYTHON:-python3}
    : "${OUT:?set OUT to the folder that receives the results}"
    SITE=${SITE:-/tmp/site}
    DEVICE=cuda
    LIMIT_SCALE=${LIMIT_SCALE:-1}
    ATTRIBUTION_SIZES=(--model vgg16 resnet50 --batch 32 --size 224 --classes 1000)
    METRICS_SIZES=(--model resnet50 --batch 32 --size 224 --classes 1000 --steps 100 --patch 16)
    CALLBACK_SIZES=()
    TRANSFORMER_SIZES=()
fi
COMPOSITES=(epsilon_gamma_box epsilon_plus_flat epsilon_alpha2_beta1)
mkdir -p "$OUT"
: > "$OUT/status.txt"
failed=0

# step NAME TIMEOUT_SECONDS COMMAND...: run COMMAND (limit scaled by LIMIT_SCALE) with logs in $OUT, record its status.
step() {
    local name=$1 limit=$(($2 * LIMIT_SCALE))
    shift 2
    local started=$SECONDS
    echo "== $name: $*" | tee "$OUT/$name.err"
    timeout --kill-after=10 "$limit" "$@" 2> >(tee -a "$OUT/$name.err" >&2) | tee "$OUT/$name.md"
    local status=$?
    echo "$name: exit $status after $((SECONDS - started)) s (limit $limit s)" | tee -a "$OUT/status.txt"
    if ((status != 0)); then
        failed=1
    fi
}

# python_has CODE: whether the Python under test runs CODE without error.
python_has() {
    "$PYTHON" -c "$1" > /dev/null 2>&1
}

if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv \
        | tee "$OUT/nvidia-smi.txt"
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    step install 60 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl
    if ! python_has "import sys; sys.path.insert(0, '$SITE'); import zennit"; then
        # no usable pip: the wheels are pure Python, so unpacking them is an installation
        for wheel in .whl/*.whl; do
            step "unpack_$(basename "$wheel" .whl)" 30 "$PYTHON" -m zipfile -e "$wheel" "$SITE"
        done
    fi
else
    echo "install: no wheels in .whl/ (carry the ignored .whl folder); zennit and quantus columns stay empty" \
        | tee -a "$OUT/status.txt"
    failed=1
fi
export PYTHONPATH="$SITE:$PWD"

step env 30 "$PYTHON" - <<'EOF'
import platform
from importlib.metadata import version

import torch

print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {version('torchvision')}, "
      f"lightning {version('lightning')}, torchmetrics {version('torchmetrics')}")
print(f"cuda available: {torch.cuda.is_available()}", torch.cuda.get_device_name() if torch.cuda.is_available() else "")
for module in ("zennit", "quantus", "matplotlib", "PIL", "jsonargparse", "tensorboard"):
    try:
        __import__(module)
        print(f"{module}: importable")
    except Exception as error:
        print(f"{module}: NOT importable ({type(error).__name__}: {error})")
EOF

step attribution 170 "$PYTHON" -m benchmarks.attribution --device "$DEVICE" "${ATTRIBUTION_SIZES[@]}" \
    --composite "${COMPOSITES[@]}" --profile

QUANTUS_FLAG=()
if ! python_has "import quantus"; then
    QUANTUS_FLAG=(--skip-quantus)
fi
step metrics 120 "$PYTHON" -m benchmarks.metrics --device "$DEVICE" "${METRICS_SIZES[@]}" "${QUANTUS_FLAG[@]}"

# with the torch.compile'd and bf16-mixed rows (issue 14: their cost)
step callback 150 "$PYTHON" -m benchmarks.callback --device "$DEVICE" "${CALLBACK_SIZES[@]}" --compiled --bf16

# AttnLRP and CP-LRP (issue 11): the ViT always, GPT-2 where the box has transformers
TRANSFORMER_MODELS=(vit_b_16)
if python_has "import transformers"; then
    TRANSFORMER_MODELS+=(gpt2)
fi
step transformers 90 "$PYTHON" -m benchmarks.transformers --device "$DEVICE" --model "${TRANSFORMER_MODELS[@]}" \
    "${TRANSFORMER_SIZES[@]}"

# Last, as the least needed: what the closed-form fast path buys over the generic autograd path.
if python_has "import lrp_lightning.core as core; assert hasattr(core, 'fast_path')"; then
    step attribution_generic 70 "$PYTHON" -m benchmarks.attribution --device "$DEVICE" "${ATTRIBUTION_SIZES[@]}" \
        --composite "${COMPOSITES[@]}" --generic --no-zennit
fi

echo "== results in $OUT"
cat "$OUT/status.txt"
exit "$failed"
