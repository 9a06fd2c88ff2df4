"""``molediff property-model``: train the property model that steers a conditional drug-like model's
sampling towards its targets (``molediff sample --steer S --property-model FILE``; :mod:`molediff.steering`).
Torch, RDKit and the data code are imported only to run, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from molediff.errors import UserError

#: fewer usable molecules than this cannot train a property model worth steering with
MIN_MOLECULES = 2_000
#: molecules held out for the validation error (at most a fifth of those read)
HELD_OUT = 1_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train a property model for a conditional model: a small invariant network that reads a molecule as the model "
        "writes its estimate (atom types, charges, hydrogen counts, bonds, positions) and predicts the model's "
        "conditioning properties (RDKit's values of its training molecules). 'molediff sample --condition ... --steer S "
        "--property-model FILE' then corrects each molecule towards its targets in the late sampling steps. About 20 "
        "minutes on one CPU core for a drug-like model.")
    p.add_argument("--checkpoint", required=True, help="the conditional model (a model file or training checkpoint)")
    p.add_argument("--out", required=True, help="the property model file to write")
    p.add_argument("--data", default=None,
                   help="training molecules (SDF files or a 'molediff data' folder; default: the model's own training data)")
    p.add_argument("--molecules", type=int, default=40_000,
                   help="molecules to read from it, 1,000 of them held out for the validation error (default 40000)")
    p.add_argument("--minutes", type=float, default=20.0, help="training time, wall minutes (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from molediff.conditioning import condition_family
    from molediff.data.files import with_condition_properties
    from molediff.sampling import MoleculeGenerator
    from molediff.steering import train_property_model
    from molediff.training import read_training_files

    if not args.minutes > 0 or args.molecules < MIN_MOLECULES:
        raise UserError(f"--minutes must be > 0 and --molecules at least {MIN_MOLECULES}")
    torch.set_num_threads(max(1, args.threads))
    gen = MoleculeGenerator.from_file(args.checkpoint)
    dcfg = gen.config.diffusion
    if not dcfg.conditions or not dcfg.bonds or condition_family(dcfg.conditions) != "druglike":
        why = ("has no conditions" if not dcfg.conditions else "writes no bonds" if not dcfg.bonds
               else "is conditioned on QM9's properties, which RDKit cannot compute")
        raise UserError(f"{args.checkpoint}: a property model steers a drug-like conditional model that writes bonds; "
                        f"this one {why}")
    source = args.data or gen.config.data
    if source.split(":")[0] == "qm9" or not Path(source).exists():
        raise UserError(f"{source}: not a folder or file of training molecules on this machine; pass --data")
    mols = read_training_files(dataclasses.replace(gen.config, data=source), limit=args.molecules)
    if dcfg.max_hydrogens:
        mols, _ = mols.heavy_atoms()
    if len(mols) < MIN_MOLECULES:
        raise UserError(f"{source}: {len(mols)} usable molecules, need at least {MIN_MOLECULES}")
    mols = with_condition_properties(mols, dcfg.conditions, progress=sys.stderr.isatty())
    perm = np.random.default_rng(args.seed).permutation(len(mols))
    held = min(HELD_OUT, len(mols) // 5)
    train, valid = mols.subset(perm[held:]), mols.subset(perm[:held])
    print(f"training on {len(train)} molecules for {args.minutes:g} minutes (validation: {len(valid)})", flush=True)
    model = train_property_model(gen.diffusion, train, valid, args.minutes, seed=args.seed,
                                 report=lambda line: print(line, flush=True))
    model.info.update(source=str(source), checkpoint=str(args.checkpoint))
    model.save(args.out)
    print(f"wrote {args.out}: molediff sample --checkpoint {args.checkpoint} --condition NAME=VALUE --steer 0.05 "
          f"--property-model {args.out}")
    return 0
