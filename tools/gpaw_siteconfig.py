# GPAW build settings for `make install` (tools/install.sh passes this file as GPAW_CONFIG).
# MPI through OpenMPI's C++ wrapper, with ScaLAPACK: GPAW 26.7 needs ScaLAPACK to split
# plane-wave and FD calculations over domains. ASE_LDM_GPAW_MPI=0 builds a serial GPAW.
# Executed by GPAW's setup.py, which defines `libraries` and imports `os`.
import os

libraries += ['blas']  # noqa: F821 (GPAW's default; a siteconfig replaces the defaults)
if os.environ.get('ASE_LDM_GPAW_MPI', '1') == '1':
    mpi = True
    compiler = 'mpic++'
    scalapack = True
    libraries += ['scalapack-openmpi']  # noqa: F821
else:
    mpi = False
