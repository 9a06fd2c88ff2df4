"""``molediff data``: the command-line layer over :mod:`molediff.data.build` (argument checks, the
summary, exit codes). RDKit and the build code are imported only to run, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from molediff.config import TRAINING_MAX_ATOMS
from molediff.errors import UserError

DESCRIPTION = """\
Build 3D training data from SMILES: each molecule is standardised (largest fragment kept, charges
neutralised where possible, isotope labels stripped; dummy atoms, query features and elements outside
H C N O F B Si P S Cl Br I refused), given hydrogens, embedded with ETKDGv3 and relaxed with MMFF94
(UFF where MMFF94 has no parameters); the lowest-energy conformer is written.

Output: --out DIR holds chunk_000000.sdf, chunk_000001.sdf, ... (each the molecules of --chunk-size
consecutive source molecules, in source order; of the drawn ones with --sample), a JSON sidecar per chunk (its failures and the SDF's
checksum) and, once every chunk is there, manifest.json. Train on it with 'molediff train --data DIR'.

Resume: rerun the same command; chunks that exist and match their checksum are kept, missing or
corrupt ones are rebuilt. Output does not depend on --workers, --shard or interruptions (kill -9
included): the same settings always give bit-identical chunk files on one machine. A build with other
settings (source content, --split, --limit, --sample, --seed, --conformers, --max-atoms, --chunk-size, the
molediff or RDKit version) into a folder that holds one is refused (--force rebuilds).

Job arrays: run 'molediff data --out SHARED ... --shard I/N' for I = 0..N-1 (same options otherwise)
on N machines writing into one shared folder; shard I builds the chunks whose index % N == I. The shard
that finds every chunk present writes manifest.json; or run the same command with --check (no --shard)
once all have finished, which verifies every chunk and writes it. Locks (.build*.lock in DIR) refuse a
second builder of the same chunks on the same machine.

Exact duplicate SMILES lines are dropped as "duplicate" (other spellings of one molecule are kept);
every molecule not written is counted by reason in the sidecars, the manifest and the summary."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (required; created if needed); chunk files, sidecars and manifest.json go there")
    p.add_argument("--source", default="moses", metavar="moses|FILE",
                   help="'moses' (default): the MOSES data set of the installed molsets package (nothing is downloaded); "
                        "or a file: .smi/.txt (one SMILES per line, an optional name after whitespace; a 'smiles' header "
                        "line, empty lines, '#' comments, a UTF-8 BOM and CRLF are fine), .csv (a column named 'smiles', "
                        "any case; an optional name/id column), or .sdf (each record's molecule is re-embedded); .gz "
                        "compressed files too")
    p.add_argument("--split", default=None, choices=("train", "test", "test_scaffolds"),
                   help="MOSES split (default train; --source moses only)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N molecules of the source (a fixed, named subset; default: all)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="use N molecules drawn at random from the whole source (uniformly, without replacement, by --seed; "
                        "kept in source order): a representative subset, where --limit's first N need not be one (MOSES's "
                        "train split is ordered: its first 60,000 molecules hold S, Cl or Br in 52.8%%, the split in 42.6%%). "
                        "Default: all")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed, ≥ 0 (default 0); each molecule's embedding seed derives from it and the molecule's "
                        "index in the source")
    p.add_argument("--conformers", type=int, default=1, metavar="K",
                   help="conformers embedded and relaxed per molecule; the lowest-energy one is written (default 1)")
    p.add_argument("--max-atoms", type=int, default=TRAINING_MAX_ATOMS,
                   help=f"refuse molecules with more atoms than this, hydrogens included (default {TRAINING_MAX_ATOMS}, "
                        f"the most 'molediff train --data' reads)")
    p.add_argument("--chunk-size", type=int, default=1000,
                   help="source molecules per chunk file (default 1000); part of the settings")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: all cores of this machine); 1 runs in this process")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="build only chunks whose index %% N == I, for N machines sharing one folder (default 0/1: all)")
    p.add_argument("--check", action="store_true",
                   help="(default off) build nothing: verify every chunk of --out against these options, list what is missing or "
                        "corrupt (exit code 1), and write manifest.json when the build is complete")
    p.add_argument("--force", action="store_true",
                   help="rebuild when --out holds a build with other settings (this shard's chunks are replaced, the "
                        "manifest removed until the new build is complete); default: refuse")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar with molecules/s and ETA on stderr)")


def run(args: argparse.Namespace) -> int:
    from molediff.data.build import BuildOptions, build, check, parse_shard

    shard = parse_shard(args.shard)
    if args.check and shard != (0, 1):
        raise UserError("--check verifies every chunk; give it without --shard")
    if args.check and args.force:
        raise UserError("--check builds nothing; give it without --force")
    opts = BuildOptions(out=Path(args.out), source=args.source, split=args.split, limit=args.limit, sample=args.sample, seed=args.seed,
                        conformers=args.conformers, max_atoms=args.max_atoms, chunk_size=args.chunk_size,
                        workers=args.workers, shard=shard, force=args.force, progress=not args.no_progress)
    report = check(opts) if args.check else build(opts)
    print(report.summary(), flush=True)
    out = report.out
    if report.interrupted:
        print(f"interrupted: {len(report.missing)} chunk(s) of this build not written; the others are complete "
              f"and verified; rerun the same command to resume", file=sys.stderr)
        return 130
    if report.manifest_written and not report.written:
        print(f"complete, but no molecule could be built (the reasons are counted above): {out} holds nothing to "
              f"train on", file=sys.stderr)
        return 1
    if report.manifest_written:
        print(f"complete: {out / 'manifest.json'} ({report.num_chunks} chunk(s)); train with: molediff train --data {out}")
        return 0
    missing = sorted(report.missing)
    shown = ", ".join(f"{c} ({report.missing[c]})" for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
    if args.check:
        print(f"incomplete: {len(missing)} of {report.num_chunks} chunk(s) not built or not valid: {shown}; run the build "
              f"command (with the same options) to build them", file=sys.stderr)
        return 1
    print(f"{report.num_chunks - len(missing)} of {report.num_chunks} chunk(s) present; waiting for other shards "
          f"(chunks {shown}); the shard that completes the folder writes manifest.json, or run the same command "
          f"with --check and without --shard once all have finished")
    return 0
