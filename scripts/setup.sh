#!/usr/bin/env bash
# Set up hvdtrain from nothing on Debian: Open MPI, .venv, TensorFlow, Horovod (built once, wheel cached), hvdtrain.
# Re-running is fast and harmless. Variables: PYTHON (default python3.11, else python3),
# HVDTRAIN_WHEEL_CACHE (default ~/.cache/hvdtrain/wheels), HVDTRAIN_GPU=1 for the CUDA/NCCL build (untested here).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
tf_pkg="tensorflow-cpu==2.15.1"
horovod_version="0.28.1"
cache="${HVDTRAIN_WHEEL_CACHE:-$HOME/.cache/hvdtrain/wheels}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ "${HVDTRAIN_GPU:-0}" = 1 ]; then tf_pkg="tensorflow[and-cuda]==2.15.1"; fi

say() { printf '[setup] %s\n' "$*"; }

# 1. System packages: Open MPI and cmake 3.x (pip's cmake 4.x breaks Horovod's bundled gloo).
missing=()
command -v mpirun >/dev/null || missing+=(openmpi-bin)
[ -f /usr/include/x86_64-linux-gnu/openmpi/include/mpi.h ] || [ -n "$(command -v mpicc || true)" ] || missing+=(libopenmpi-dev)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] missing system packages; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# 2. Virtual environment.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv with $python"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# 3. TensorFlow first (Horovod's build imports it).
if ! "$venv/bin/python" -c "import tensorflow" 2>/dev/null; then
  say "installing $tf_pkg"
  "${pip[@]}" install --upgrade pip wheel setuptools
  "${pip[@]}" install "$tf_pkg" "numpy<2"
fi

# 4. Horovod: build the wheel once per (Python, TF, Horovod, GPU) and cache it.
py_tag=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
flavour=$([ "${HVDTRAIN_GPU:-0}" = 1 ] && echo nccl || echo cpu)
wheel_dir="$cache/horovod-$horovod_version-$py_tag-tf2.15.1-$flavour"
if ! "$venv/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
  if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
    say "building horovod==$horovod_version (TensorFlow + MPI + Gloo), about 2-5 minutes"
    mkdir -p "$wheel_dir"
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
    export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    export HOROVOD_CMAKE=/usr/bin/cmake MAKEFLAGS="-j$(nproc)"
    if [ "${HVDTRAIN_GPU:-0}" = 1 ]; then export HOROVOD_GPU_OPERATIONS=NCCL; fi
    # Debian's cmake, never pip's 4.x.
    "${pip[@]}" uninstall -y cmake 2>/dev/null || true
    "${pip[@]}" wheel --no-build-isolation --no-deps --no-binary horovod -w "$wheel_dir" "horovod==$horovod_version"
  fi
  say "installing Horovod from $wheel_dir"
  "${pip[@]}" install --no-deps "$wheel_dir"/horovod-*.whl
  "${pip[@]}" install cloudpickle psutil pyyaml packaging
fi

# 5. hvdtrain itself, editable, with test extras.
if ! "$venv/bin/python" -c "import hvdtrain, pytest, mpi4py" 2>/dev/null \
   || [ "$root/setup.cfg" -nt "$venv/.hvdtrain-installed" ]; then
  say "installing hvdtrain (editable, with test extras)"
  "${pip[@]}" install -e "$root[test,$([ "${HVDTRAIN_GPU:-0}" = 1 ] && echo gpu || echo cpu)]"
  touch "$venv/.hvdtrain-installed"
fi

# 6. Check the build.
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" - <<'PY'
import horovod.tensorflow as hvd
built = {"MPI": hvd.mpi_built(), "Gloo": hvd.gloo_built()}  # the import itself proves TensorFlow was built
missing = [name for name, ok in built.items() if not ok]
if missing:
    raise SystemExit(f"[setup] Horovod lacks {', '.join(missing)}: remove the cached wheel and re-run")
import horovod
print(f"[setup] ok: Horovod {horovod.__version__} with TensorFlow, MPI and Gloo")
PY
