"""The model registry (ase_ldm.core.registry): names, folders, families, the protocol, shipped models."""

from __future__ import annotations

import numpy as np

from ase_ldm.sync.prior import RadialPrior

LI = RadialPrior(numbers=(3,), dg=0.5, profiles=(tuple(1.15 * np.exp(-0.5 * (0.5 * np.arange(40)) ** 2 / 4)),))


def test_pretrained_sync_model_loads():
    from ase_ldm.core.registry import pretrained_names
    from ase_ldm.scf.providers import ModelProvider, make_provider

    assert "li16-800K-sync" in pretrained_names()
    prov = make_provider("li16-800K-sync")
    assert isinstance(prov, ModelProvider) and prov.cold_start
