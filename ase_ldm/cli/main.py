"""``ase-ldm`` entry point, in the style of ASE's CLI.

Each subcommand lives in its own module with a ``CLICommand`` class that has a docstring
(its help), ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap

from ..errors import AseLdmError

COMMANDS = [
    ("record", "ase_ldm.cli.record"),
    ("import", "ase_ldm.cli.import_data"),
    ("export-cube", "ase_ldm.cli.export_cube"),
    ("info", "ase_ldm.cli.info"),
    ("baseline", "ase_ldm.cli.baseline"),
    ("evaluate", "ase_ldm.cli.evaluate"),
    ("train", "ase_ldm.cli.train"),
    ("train-sync", "ase_ldm.cli.train_sync"),
    ("train-gldm", "ase_ldm.cli.train_gldm"),
    ("rollout", "ase_ldm.cli.rollout"),
    ("predict", "ase_ldm.cli.predict"),
    ("scf-bench", "ase_ldm.cli.scf_bench"),
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ase-ldm", description="Electron-density dynamics from GPAW AIMD: record, import, inspect, evaluate.")
    parser.add_argument("--version", action="version", version=f"ase-ldm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    parser.add_argument("-T", "--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        cmd = importlib.import_module(module_name).CLICommand
        doc = textwrap.dedent(cmd.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else "", description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except AseLdmError as err:  # bad input; anything else is a bug and shows its traceback
        if args.traceback:
            raise
        print(f"ase-ldm {args.command}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ase-ldm {args.command}: interrupted; completed frames are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
