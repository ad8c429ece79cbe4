"""Examples in docstrings written with ``>>>`` run: every module of the package is doctested."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ase_ldm

MODULES = sorted(m.name for m in pkgutil.walk_packages(ase_ldm.__path__, "ase_ldm."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name.endswith(("data.gpaw_io", "data.aimd", "scf.hook")):
        pytest.importorskip("gpaw")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_the_registry_example_is_a_doctest():
    from ase_ldm.core import registry

    assert doctest.testmod(registry).attempted >= 8
