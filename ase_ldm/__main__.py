"""``python -m ase_ldm``: the same command line as ``ase-ldm``."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
