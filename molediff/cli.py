"""Command-line entry point: ``molediff <command> ...``.

The CLI is thin: each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``, and only the chosen module is imported (so ``molediff --help`` stays fast).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from molediff._version import __version__
from molediff.errors import UserError

#: name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("molediff.commands.sample", "generate 3D molecules and write them to SDF/XYZ"),
    "evaluate": ("molediff.commands.evaluate", "score molecules in an SDF file (stability, validity, uniqueness, novelty, ...)"),
    "train": ("molediff.commands.train", "train the E(3)-equivariant diffusion model on QM9 or your own molecules"),
    "distill": ("molediff.commands.distill", "distil a model into a few-step student (progressive distillation)"),
    "property-model": ("molediff.commands.property_model", "train the property model that steers a conditional model "
                       "towards its targets (sample --steer)"),
    "data": ("molediff.commands.data", "build 3D training data (SDF chunks) from SMILES: MOSES or your own file"),
    "image-demo": ("molediff.image.demo", "train the image U-Net on 8x8 digits and write a PNG grid (checks the DDPM core)"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molediff",
        description="Generate 3D molecules with denoising diffusion. Run 'molediff COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"molediff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"molediff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"molediff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
