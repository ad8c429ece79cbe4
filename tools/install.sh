#!/usr/bin/env bash
# Idempotent set-up for ase_ldm: system libraries for GPAW, a virtual environment,
# torch first (a pinned CPU wheel), then the package with its extras.
# Every step checks whether it is already done and skips it if so.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-gpaw,test}

say() { printf '[install] %s\n' "$*"; }

# 1. System packages GPAW links against (libxc, OpenBLAS, FFTW), and those of parallel runs
#    (OpenMPI, ScaLAPACK): where those cannot be installed, GPAW is built serially (step 4).
missing=()
optional=()
for pkg in libxc-dev libopenblas-dev libfftw3-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
for pkg in openmpi-bin libopenmpi-dev libscalapack-openmpi-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || optional+=("$pkg")
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ((${#missing[@]} + ${#optional[@]})); then
    say "installing system packages: ${missing[*]} ${optional[*]}"
    $SUDO apt-get update -qq || true
fi
if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
if ((${#optional[@]})); then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${optional[@]}" \
        || say "warning: could not install ${optional[*]}; GPAW will be built without MPI"
fi
if ! ((${#missing[@]} + ${#optional[@]})); then
    say "system packages present"
fi

# 2. Virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# 3. torch first: a bare 'torch' requirement could pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
    say "installing $TORCH_SPEC"
    "$PY" -m pip install -q "$TORCH_SPEC"
else
    say "torch present: $("$PY" -c 'import torch; print(torch.__version__)')"
fi

# 4. The package, editable, with extras. GPAW 26.7's C sources need a C++ compiler; it is built
#    with MPI and ScaLAPACK (tools/gpaw_siteconfig.py), or serially if that build fails.
stamp="$VENV/.ase_ldm-installed"
export GPAW_CONFIG="$PWD/tools/gpaw_siteconfig.py"
command -v mpic++ >/dev/null || export ASE_LDM_GPAW_MPI=0  # no MPI compiler: a serial GPAW
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing ase_ldm[$EXTRAS] (GPAW builds with MPI in about two minutes)"
    if ! CC=${CC:-g++} "$PY" -m pip install -q -e ".[$EXTRAS]"; then
        say "warning: GPAW did not build with MPI; building it serially (the MPI tests will be skipped)"
        ASE_LDM_GPAW_MPI=0 CC=${CC:-g++} "$PY" -m pip install -q -e ".[$EXTRAS]"
        touch "$VENV/.gpaw-serial"
    fi
    touch "$stamp"
else
    say "ase_ldm[$EXTRAS] installed"
fi

# 5. An older .venv holds a serial GPAW: rebuild it with MPI once (from source, not a cached wheel).
if [[ ",$EXTRAS," == *",gpaw,"* ]] && [ "${ASE_LDM_GPAW_MPI:-1}" = 1 ] && [ ! -f "$VENV/.gpaw-serial" ] \
        && ! "$PY" -c "import sys, _gpaw; sys.exit(not hasattr(_gpaw, 'Communicator'))" 2>/dev/null; then
    say "rebuilding GPAW with MPI and ScaLAPACK"
    if ! "$PY" -m pip install -q --force-reinstall --no-deps --no-cache-dir --no-binary gpaw "gpaw==26.7.*"; then
        say "warning: the MPI build failed; keeping the serial GPAW (the MPI tests will be skipped)"
        touch "$VENV/.gpaw-serial"
    fi
fi
"$PY" -c "import gpaw, _gpaw, ase_ldm; print('[install] ok: gpaw', gpaw.__version__,
      '(MPI)' if hasattr(_gpaw, 'Communicator') else '(serial)', '| ase_ldm', ase_ldm.__version__)"
