#!/usr/bin/env bash
# One-shot check of the CUDA paths with timings (benchmarks/gpu_check.py): bf16 policy, HF
# generation, one SFT / PPO / GRPO step through train.py, vLLM generation if installed, a 2-process
# PPO step with >= 2 GPUs. No network, no model download, no ../shared/data: a random model and
# hand-written problems are built on the spot. Without a GPU it is a quick CPU dry run.
#
#   bash benchmarks/gpu_check.sh                              # all steps, table + total wall time
#   bash benchmarks/gpu_check.sh --json /tmp/gpu_check.json   # any gpu_check.py argument (--help)
#   bash benchmarks/gpu_check.sh --fetch-wheels               # on a CONNECTED machine: see below
#
# Which Python runs it (the first that works):
#   1. $GPU_CHECK_PYTHON, if set;
#   2. the repo's .venv, if it is there and imports what the check needs;
#   3. `make venv` (this repo's Makefile: requirements.txt from the package index) when .venv is
#      absent or broken; pip is told to fail fast, so an offline machine moves on in seconds (and
#      the half-made .venv is removed again);
#   4. the machine's python3 (a GPU image's CUDA PyTorch), with the wheels in $GPU_CHECK_WHEELS
#      (default .cache/gpu_check/wheels, git-ignored) installed into a temporary folder first.
# A GPU machine with no network and a python3 that lacks trl / hydra-core / datasets needs (4):
# run `bash benchmarks/gpu_check.sh --fetch-wheels` on a connected machine first (about 2 MiB of
# pure-Python wheels for Python 3.12, no torch) and take .cache/gpu_check/wheels along.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PIP_ROOT_USER_ACTION=ignore
WHEELS=${GPU_CHECK_WHEELS:-.cache/gpu_check/wheels}
# imported by the steps (top-level modules; hydra = hydra-core, yaml = PyYAML)
REQUIRED=(torch transformers tokenizers safetensors accelerate peft trl datasets hydra omegaconf numpy yaml jinja2 pytest)
SECONDS=0

pin() {  # the version requirements.txt pins for a package, else $2
    local v
    v=$(grep -iE "^$1==" requirements.txt | head -1 | sed -E 's/^[^=]+==([^ #]+).*/\1/')
    echo "$1==${v:-$2}"
}

if [ "${1:-}" = "--fetch-wheels" ]; then
    # What a GPU image with CUDA PyTorch, transformers, accelerate, peft, tokenizers, pyarrow, pandas,
    # xxhash, fsspec, pyyaml and jinja2 lacks for these steps (the device image's package list).
    PY=${GPU_CHECK_PYTHON:-python3}
    PYVER=${GPU_CHECK_PYVER:-3.12}
    mkdir -p "$WHEELS"
    PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    rc=0
    for req in "$(pin trl 1.12.0)" "$(pin datasets 5.2.0)" "$(pin hydra-core 1.3.8)" "$(pin omegaconf 2.3.1)" \
               dill==0.4.1 multiprocess==0.70.19; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
            "${PLATFORMS[@]}" -d "$WHEELS" "$req" || { echo "could not download $req" >&2; rc=1; }
    done
    # published as an sdist only; pure Python, so a wheel built here installs anywhere
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3 || rc=1
    ls -l "$WHEELS"
    du -sh "$WHEELS"
    echo "take $WHEELS to the GPU machine (the device tool: carry [\"$WHEELS\"]), then: bash benchmarks/gpu_check.sh"
    exit $rc
fi

has_all() {  # has_all PYTHON: exit 0 iff it imports every module in REQUIRED; prints the missing ones
    "$1" - "${REQUIRED[@]}" <<'EOF'
import importlib.util, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
print(" ".join(missing))
sys.exit(1 if missing else 0)
EOF
}

PY=""
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY=$GPU_CHECK_PYTHON
elif [ -x .venv/bin/python ] && missing=$(has_all .venv/bin/python); then
    PY=.venv/bin/python
else
    had_venv=0
    [ -e .venv ] && had_venv=1
    echo "gpu_check.sh: no usable .venv: trying \`make venv\` (pip fails fast when offline)"
    if PIP_RETRIES=0 PIP_TIMEOUT=10 PIP_DISABLE_PIP_VERSION_CHECK=1 make venv && missing=$(has_all .venv/bin/python); then
        PY=.venv/bin/python
    else
        echo "gpu_check.sh: \`make venv\` did not give a working .venv (offline?): falling back to python3"
        if [ "$had_venv" = 0 ]; then rm -rf .venv; fi  # only what this script just created
        SYS=$(command -v python3 || true)
        if [ -z "$SYS" ]; then echo "gpu_check.sh: no python3 on PATH" >&2; exit 2; fi
        if compgen -G "$WHEELS/*.whl" >/dev/null; then
            SITE=${TMPDIR:-/tmp}/gpu_check_site
            echo "gpu_check.sh: installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
            for whl in "$WHEELS"/*.whl; do  # one by one: a wheel for another Python is skipped, not fatal
                "$SYS" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
                    "$whl" || echo "gpu_check.sh: skipped $whl (see above)" >&2
            done
            export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        fi
        if missing=$(has_all "$SYS"); then
            PY=$SYS
        else
            echo "gpu_check.sh: $SYS lacks: $missing" >&2
            echo "  fix: on a connected machine run \`bash benchmarks/gpu_check.sh --fetch-wheels\` and bring $WHEELS along," >&2
            echo "  or set GPU_CHECK_PYTHON to a Python that has them" >&2
            exit 3
        fi
    fi
fi

echo "gpu_check.sh: python $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), environment ready in ${SECONDS}s"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/  nvidia-smi: /'
fi
"$PY" benchmarks/gpu_check.py "$@"
rc=$?
echo "gpu_check.sh: exit $rc, ${SECONDS}s in all (environment + check)"
exit $rc
