"""Everything that drives GPAW's SCF: density providers (guesses of the next step's ``nt`` and
``D``), the hook that writes a guess into GPAW (the only writer of GPAW internals), and the
benchmark that compares providers in MD."""
