"""What both model families share: device, checkpoints, configs, the model registry,
the extrapolation table and the Fourier helpers. Nothing here knows a model family except
:mod:`ase_ldm.core.registry`, which maps a checkpoint's family to its loader."""
