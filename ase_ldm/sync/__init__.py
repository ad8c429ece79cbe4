"""The atom-synchronised model family: a learned superposition of atomic densities (``prior``)
corrected by a periodic full-resolution CNN with a PAW head (``net``), trained on trajectories
(``series``, ``training``) with the cell's point symmetries (``symmetry``), served by
:class:`~ase_ldm.sync.predictor.SyncPredictor` from the atoms and the last converged steps.
Configs: :mod:`ase_ldm.sync.config`. Imports torch, never GPAW (except to read projector
angular momenta when it is installed)."""
