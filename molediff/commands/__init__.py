"""The command-line layer: one module per ``molediff`` subcommand, each with ``add_arguments(parser)``
and ``run(args) -> int``. They import torch only inside ``run`` (so ``--help`` is instant) and call
the Python API (:mod:`molediff.sampling`, :mod:`molediff.training`, ...)."""
