#!/usr/bin/env python
"""Train the QM9 model: a thin wrapper over ``molediff train`` (same options; see --help).

    python scripts/train_qm9.py --out ~/molediff-runs/qm9 --threads 2          # start
    python scripts/train_qm9.py --out ~/molediff-runs/qm9 --threads 2 --resume # continue
"""

import sys

from molediff.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
