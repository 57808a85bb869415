#!/usr/bin/env bash
# Set up hvdtrain from nothing on Debian: Open MPI, a virtual environment, TensorFlow, Horovod (built once from its
# verified sdist with patches/horovod-0.28.1-tf2.21.patch, wheel cached), hvdtrain.
# Re-running is fast and harmless.
#
# Variables:
#   HVDTRAIN_STACK        tf2.21 (default: TensorFlow 2.21, Keras 3, numpy 2) or tf2.15 (TensorFlow 2.15, Keras 2, numpy 1)
#   HVDTRAIN_VENV         the virtual environment (default: .venv for tf2.21, .venv-tf2.15 for tf2.15)
#   HVDTRAIN_GPU=1        the CUDA TensorFlow and a Horovod built with NCCL (not tested here: no GPU)
#   HVDTRAIN_WHEEL_CACHE  where built Horovod wheels are kept (default ~/.cache/hvdtrain/wheels)
#   PYTHON                the interpreter for a new venv (default python3.11, else python3)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
stack="${HVDTRAIN_STACK:-tf2.21}"
gpu="${HVDTRAIN_GPU:-0}"
horovod_version="0.28.1"
horovod_sdist_sha256="92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0"
horovod_patch="$root/patches/horovod-$horovod_version-tf2.21.patch"
cache="${HVDTRAIN_WHEEL_CACHE:-$HOME/.cache/hvdtrain/wheels}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# The stacks: one setting picks TensorFlow (and with it Keras and numpy) and the default venv.
case "$stack" in
  tf2.21) tf_version=2.21.0 numpy_spec="numpy>=2" default_venv="$root/.venv" ;;
  tf2.15) tf_version=2.15.1 numpy_spec="numpy<2" default_venv="$root/.venv-tf2.15" ;;
  *) die "HVDTRAIN_STACK must be tf2.21 or tf2.15, got '$stack'" ;;
esac
venv="${HVDTRAIN_VENV:-$default_venv}"
flavour=$([ "$gpu" = 1 ] && echo nccl || echo cpu)
tf_pkg=$([ "$gpu" = 1 ] && echo "tensorflow[and-cuda]==$tf_version" || echo "tensorflow-cpu==$tf_version")
stack_id="$stack-$flavour"

# 1. System packages: Open MPI, cmake 3.x (pip's cmake 4.x breaks Horovod's bundled gloo), a compiler, patch.
missing=()
command -v mpirun >/dev/null || missing+=(openmpi-bin)
[ -f /usr/include/x86_64-linux-gnu/openmpi/include/mpi.h ] || [ -n "$(command -v mpicc || true)" ] || missing+=(libopenmpi-dev)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v patch >/dev/null || missing+=(patch)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing system packages; run: sudo apt-get install ${missing[*]}"
  fi
fi

# 2. Virtual environment, recreated when it holds another stack (it is ours: nothing else lives there).
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.hvdtrain-stack" 2>/dev/null)" != "$stack_id" ]; then
  say "$venv holds another stack ($(cat "$venv/.hvdtrain-stack" 2>/dev/null || echo unknown)); recreating it for $stack_id"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv ($stack_id) with $python"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# 3. TensorFlow first (Horovod's build imports it).
if ! "$venv/bin/python" -c "import tensorflow" 2>/dev/null; then
  say "installing $tf_pkg ($numpy_spec)"
  "${pip[@]}" install --upgrade pip wheel setuptools
  "${pip[@]}" install "$tf_pkg" "$numpy_spec"
fi
echo "$stack_id" >"$venv/.hvdtrain-stack"

# 4. Horovod: the sdist by version from the package registry, its sha256 checked, the project's patch applied, built
#    once per (Python, TensorFlow, Horovod, patch, GPU) and cached.
build_horovod() {
  local wheel_dir=$1 sdist src
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  say "downloading the horovod==$horovod_version sdist"
  "${pip[@]}" download --no-deps --no-binary :all: -d "$work" "horovod==$horovod_version"
  sdist="$work/horovod-$horovod_version.tar.gz"
  [ -f "$sdist" ] || die "pip did not download $sdist"
  echo "$horovod_sdist_sha256  $sdist" | sha256sum --check --quiet - \
    || die "horovod-$horovod_version.tar.gz does not have the expected sha256 $horovod_sdist_sha256"
  tar -xzf "$sdist" -C "$work"
  src="$work/horovod-$horovod_version"
  # Idempotent: an already-patched tree is left alone; a patch that does not apply stops the set-up.
  if patch -d "$src" -p1 --reverse --dry-run --force --silent <"$horovod_patch" >/dev/null 2>&1; then
    say "$(basename "$horovod_patch") is already applied"
  elif patch -d "$src" -p1 --forward --dry-run --force --silent <"$horovod_patch" >/dev/null; then
    patch -d "$src" -p1 --forward --force --silent <"$horovod_patch"
    say "applied $(basename "$horovod_patch")"
  else
    die "$horovod_patch does not apply to horovod-$horovod_version"
  fi
  say "building horovod==$horovod_version for TensorFlow $tf_version (TensorFlow + MPI + Gloo), about 3-6 minutes"
  export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
  export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  export HOROVOD_CMAKE=/usr/bin/cmake MAKEFLAGS="-j$(nproc)"  # setup.py builds with -j8 unless MAKEFLAGS is set
  if [ "$gpu" = 1 ]; then  # not tried here (no GPU): see the README's "GPU builds on TensorFlow 2.21"
    export HOROVOD_GPU_OPERATIONS=NCCL
    # TF 2.21's XLA headers include these, which ship in the TensorFlow wheel; CMake reads CXXFLAGS at configure.
    local tf_include site
    tf_include=$("$venv/bin/python" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())')
    export CXXFLAGS="${CXXFLAGS:-} -I$tf_include/external/highwayhash -I$tf_include/external/farmhash_archive/src"
    [ -d /usr/local/cuda ] && export HOROVOD_CUDA_HOME="${HOROVOD_CUDA_HOME:-/usr/local/cuda}"
    # NCCL: the nvidia-nccl-cu12 wheel that tensorflow[and-cuda] brings has only libnccl.so.2 (no static library).
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    if [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_LIB:-}" ] && [ -f "$site/nvidia/nccl/lib/libnccl.so.2" ]; then
      ln -sf libnccl.so.2 "$site/nvidia/nccl/lib/libnccl.so"
      export HOROVOD_NCCL_INCLUDE="$site/nvidia/nccl/include" HOROVOD_NCCL_LIB="$site/nvidia/nccl/lib"
      export HOROVOD_NCCL_LINK=SHARED
    fi
  fi
  "${pip[@]}" uninstall -y cmake 2>/dev/null || true  # Debian's cmake, never pip's 4.x
  mkdir -p "$wheel_dir"
  "${pip[@]}" wheel --no-build-isolation --no-deps -w "$wheel_dir" "$src"
}

py_tag=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
patch_id=$(sha256sum "$horovod_patch" | cut -c1-8)
wheel_dir="$cache/horovod-$horovod_version-$py_tag-tf$tf_version-$flavour-patch$patch_id"
if ! "$venv/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
  ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1 || build_horovod "$wheel_dir"
  say "installing Horovod from $wheel_dir"
  "${pip[@]}" install --no-deps "$wheel_dir"/horovod-*.whl
  "${pip[@]}" install cloudpickle psutil pyyaml packaging
fi

# 5. hvdtrain itself, editable, with test extras.
if ! "$venv/bin/python" -c "import hvdtrain, pytest, mpi4py" 2>/dev/null \
   || [ "$root/setup.cfg" -nt "$venv/.hvdtrain-installed" ]; then
  say "installing hvdtrain (editable, with test extras)"
  "${pip[@]}" install -e "$root[test]" "$tf_pkg" "$numpy_spec"
  touch "$venv/.hvdtrain-installed"
fi

# 6. Check the build (not with horovodrun --check-build, which reports PyTorch built when it is not).
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" - <<'PY'
import horovod.tensorflow as hvd
import tensorflow as tf
built = {"MPI": hvd.mpi_built(), "Gloo": hvd.gloo_built()}  # the import itself proves TensorFlow was built
missing = [name for name, ok in built.items() if not ok]
if missing:
    raise SystemExit(f"[setup] Horovod lacks {', '.join(missing)}: remove the cached wheel and re-run")
import horovod
from hvdtrain.backends import keras_version
print(f"[setup] ok: TensorFlow {tf.__version__} (Keras {keras_version()}), Horovod {horovod.__version__} with MPI and Gloo")
PY
