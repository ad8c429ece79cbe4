"""The ``ase-ldm`` command line: one small module per subcommand."""
