#!/bin/sh
# Installs doclane's dependencies for one image into /opt/venv, pinned by
# requirements.lock. Used by the Dockerfile at the repository root and by the
# OpenFaaS template, so both images carry the same packages.
#   install.sh DIR EXTRAS     DIR holds pyproject.toml, requirements.lock, deps.py
#                             and wheels/ (optional local wheels, e.g. torch CPU)
# torch: PyPI's Linux torch wheel is the CUDA build with GBs of nvidia-*
# packages. The CPU wheel comes from DIR/wheels when one lies there (`make
# wheels` puts it there), else from TORCH_INDEX_URL (PyTorch's CPU index).
set -eu
dir=$1
extras=${2:-}
[ -d /opt/venv ] || python -m venv /opt/venv
pip=/opt/venv/bin/pip
case ",$extras," in
  *,embed,*)
    if ls "$dir"/wheels/torch-*.whl >/dev/null 2>&1; then
      $pip install --no-deps --no-index --find-links "$dir/wheels" "torch==2.13.0"
    elif [ -n "${TORCH_INDEX_URL:-}" ]; then
      $pip install --no-deps --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
    else
      echo "install.sh: no torch CPU wheel in wheels/ and no TORCH_INDEX_URL; run 'make wheels' or pass" \
           "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2
      exit 2
    fi ;;
esac
/opt/venv/bin/python "$dir/deps.py" "$dir/pyproject.toml" "$extras" > /tmp/requirements.txt
# The lock pins torch as plain 2.13.0; the CPU wheel's local version (+cpu)
# satisfies that, and it is installed already.
$pip install -c "$dir/requirements.lock" -r /tmp/requirements.txt
rm -f /tmp/requirements.txt
