#!/usr/bin/env bash
# Set up everything equican needs, from nothing, on a Debian-like machine: gfortran, a virtualenv in .venv, a
# torch/torchvision pair whose compiled ops load, and the project (editable) with its escnn, dev and docs extras.
#
# Idempotent and fast when already done: a stamp file in the venv records a hash of pyproject.toml and of this
# script; when it matches and $VENV/bin/python exists, nothing is installed. Delete .venv to start over.
#
# Environment: PYTHON (default python3) builds the venv; VENV (default .venv) is where it goes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.equican-setup"
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0

say() { printf 'setup: %s\n' "$*"; }
elapsed() { printf '%ss' "$SECONDS"; }

key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

# The check that the whole set-up works: torchvision's compiled ops load (timm imports them) and run.
verify() {
    HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'PY'
import torch, torchvision, timm, equican, groups
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
print(f"setup: ok: torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
      f"equican {equican.__version__}; torchvision.ops.nms runs")
PY
}

# The fast path trusts the stamp (importing timm to re-verify costs seconds on every `make test`).
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$key" && -x "$VENV/bin/python" ]]; then
    say "already done ($STAMP matches pyproject.toml and scripts/setup.sh); delete $VENV to redo"
    exit 0
fi

# 1. gfortran: escnn depends on py3nj, which has no wheel and compiles Fortran when pip installs it.
if ! command -v gfortran >/dev/null; then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "setup: error: expected root or sudo to apt-get install gfortran, got neither" >&2
            exit 1
        fi
        sudo="sudo"
    fi
    say "installing gfortran (apt-get update; apt-get install -y gfortran)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq gfortran >/dev/null
    say "gfortran installed [$(elapsed)]"
else
    say "gfortran present: $(command -v gfortran)"
fi

# 2. The virtual environment.
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV with $($PYTHON --version 2>&1)"
    if ! "$PYTHON" -m venv "$VENV"; then
        echo "setup: error: expected '$PYTHON -m venv' to work, got a failure" \
             "(on Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
else
    say "$VENV exists"
fi
PIP=("$VENV/bin/python" -m pip)

# 3. torch + torchvision. This machine's pip configuration (user config and PIP_FIND_LINKS) offers a local
# CPU-only torch wheel (torch-2.13.0+cpu), which pip prefers. The registry has no CPU-only torchvision, and the
# registry's torchvision cannot load its compiled ops against that CPU-only torch: `import timm` then fails with
# "RuntimeError: operator torchvision::nms does not exist". `--isolated` ignores that configuration, so both come
# from the registry as a matching pair (its default builds, which run on CPU as well as on a GPU; ~2.6 GB).
have_pair() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$TORCHVISION_VERSION" 2>/dev/null <<'PY'
import sys, torch, torchvision
ok = torch.__version__.split("+")[0] == sys.argv[1] and torchvision.__version__.split("+")[0] == sys.argv[2]
torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)  # raises when the compiled ops do not load
sys.exit(0 if ok else 1)
PY
}
if have_pair; then
    say "torch $TORCH_VERSION / torchvision $TORCHVISION_VERSION present and their ops load"
else
    say "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION from the registry (pip --isolated)"
    "${PIP[@]}" install --isolated -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
    say "torch installed [$(elapsed)]"
fi

# 4. The project, editable, with its extras. torch is already satisfied, so pip leaves the pair above alone.
say "installing equican (editable) with extras escnn,dev,docs"
"${PIP[@]}" install -q -e ".[escnn,dev,docs]"
say "equican installed [$(elapsed)]"

# 5. Verify, then stamp.
verify
echo "$key" > "$STAMP"
say "done in $(elapsed)"
