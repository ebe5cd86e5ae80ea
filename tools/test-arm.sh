#!/usr/bin/env bash
# The ARM (AArch64) proof on an x86-64 Debian machine, with no ARM hardware:
#  1. `pip wheel .` builds an aarch64 wheel of the package with Debian's cross compiler
#     (tools/aarch64-linux-gnu.cmake), which is installed into a folder for the aarch64 Python;
#  2. an aarch64 Python comes from Debian's own arm64 packages (debootstrap --download-only, then
#     unpacked; nothing of it runs on the host, so no chroot or binfmt is needed), and the
#     package's dependencies from PyPI's aarch64 wheels;
#  3. the kernel tests (every level against the NumPy references, bit for bit) run in that Python
#     under qemu user-mode emulation twice: `-cpu max` (NEON, dot product, i8mm: every level) and
#     `-cpu cortex-a53` (ARMv8.0: NEON only; an instruction beyond it would stop the run).
# Everything it makes stays in build/arm-test; a second run reuses the sysroot and the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$PWD/build/arm-test
SYSROOT=$WORK/sysroot SITE=$WORK/site PKG=$WORK/pkg

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt: ${need[*]}"
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! ls $SYSROOT/usr/bin/python3.* >/dev/null 2>&1; then
  echo "== aarch64 Debian Python (bookworm arm64 packages, unpacked)"
  rm -rf $WORK/debs $SYSROOT
  debootstrap --arch=arm64 --variant=minbase --download-only \
    --include=python3.11,libpython3.11-dev,libgomp1 bookworm $WORK/debs http://deb.debian.org/debian >/dev/null
  mkdir -p $SYSROOT
  for deb in $WORK/debs/var/cache/apt/archives/*.deb; do dpkg -x "$deb" $SYSROOT; done
  rm -rf $WORK/debs
fi
PYV=$(basename "$(ls $SYSROOT/usr/bin/python3.* | grep -E 'python3\.[0-9]+$' | head -1)")  # python3.11
PYVER=${PYV#python}

if [ ! -d $WORK/venv ]; then python3 -m venv $WORK/venv; fi
if [ ! -d $SITE ]; then
  echo "== aarch64 wheels of the dependencies"
  deps=$($WORK/venv/bin/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(' '.join(p['dependencies']))")
  $WORK/venv/bin/pip install -q --target $SITE --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64 \
    $deps pytest hypothesis
fi

echo "== the aarch64 wheel, built by pip from pyproject.toml with the cross compiler"
# scikit-build-core takes the toolchain from CMAKE_TOOLCHAIN_FILE, the wheel's platform tag from
# _PYTHON_HOST_PLATFORM and the extension's suffix from SETUPTOOLS_EXT_SUFFIX; the Python headers
# are the arm64 ones (pyconfig.h differs by architecture).
rm -rf $WORK/wheel $WORK/wheel-build $PKG
CMAKE_TOOLCHAIN_FILE=$PWD/tools/aarch64-linux-gnu.cmake _PYTHON_HOST_PLATFORM=linux-aarch64 \
SETUPTOOLS_EXT_SUFFIX=.cpython-${PYVER/./}-aarch64-linux-gnu.so \
  $WORK/venv/bin/pip wheel -q . --no-deps -w $WORK/wheel -Cbuild-dir=$WORK/wheel-build \
  -Ccmake.define.Python_INCLUDE_DIR=$SYSROOT/usr/include/$PYV -Ccmake.define.CMAKE_CXX_FLAGS="-idirafter $SYSROOT/usr/include"
$WORK/venv/bin/pip install -q --no-deps --target $PKG --platform linux_aarch64 --implementation cp \
  --python-version "$PYVER" --only-binary=:all: $WORK/wheel/tellme-*.whl

run() {  # run CPU PYTHON-ARGS...: the aarch64 Python under qemu
  local cpu=$1; shift
  PYTHONPATH=$PKG:$SITE PYTHONDONTWRITEBYTECODE=1 \
    qemu-aarch64 -L $SYSROOT -cpu "$cpu" $SYSROOT/usr/bin/$PYV "$@"
}
check_levels() {  # check_levels CPU EXPECTED-LEVELS DEFAULT
  run "$1" -c "
import platform, tellme
runnable = [b['name'] for b in tellme.cpu_info()['isas'] if b['runnable']]
assert platform.machine() == 'aarch64', platform.machine()
assert runnable == '$2'.split(), runnable
assert tellme.get_isa() == '$3', tellme.get_isa()
print('-cpu $1:', tellme.cpu_info()['features'], 'runs', runnable)"
}

# TELLME_* of the caller would change what the tests see
unset TELLME_ISA TELLME_NUM_THREADS
check_levels max "i8mm dotprod neon scalar" i8mm
check_levels cortex-a53 "neon scalar" neon

# End to end: the shipped model's greedy text on aarch64 is the host's, at both levels.
HOST_PYTHON=${HOST_PYTHON:-python3}
if $HOST_PYTHON -c "import tellme" 2>/dev/null; then
  prompt="ROMEO:" generate=(-m tellme generate --temperature 0 -n 40 --no-echo)
  host=$($HOST_PYTHON "${generate[@]}" "$prompt")
  for cpu in max cortex-a53; do
    [ "$(run $cpu "${generate[@]}" "$prompt")" == "$host" ] || { echo "aarch64 -cpu $cpu generated other text than the host"; exit 1; }
  done
  echo "the shipped model's 40 greedy tokens on aarch64 (-cpu max, cortex-a53) equal the host's"
else
  echo "(no tellme in $HOST_PYTHON on the host: the text comparison is left out)"
fi

# The kernel tests run every level the CPU has against the NumPy references: on the ARMv8.0 core
# (neon, scalar), then on -cpu max (i8mm and dotprod too) with the rest of what needs no torch and starts
# no subprocess (qemu-user cannot run a child aarch64 process without binfmt).
echo "== kernel tests, aarch64 -cpu cortex-a53"
run cortex-a53 -m pytest -q -p no:cacheprovider -m "kernels and not large" --ignore=tests/models
echo "== kernel, engine, session, layout and format tests, aarch64 -cpu max"
run max -m pytest -q -p no:cacheprovider -m "not large" tests/test_matmul.py tests/test_engine_kernels.py \
  tests/test_quantize.py tests/test_engine.py tests/test_errors.py tests/test_session.py tests/test_layout.py \
  tests/test_gguf_quants.py tests/test_sampling.py
