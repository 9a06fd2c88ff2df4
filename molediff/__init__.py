"""molediff: 3D molecule generation with denoising diffusion.

One DDPM core (:mod:`molediff.diffusion`) shared by an E(3)-equivariant graph network for molecules
and a small image U-Net that checks the same math in the image domain.
"""

from molediff._version import __version__

__all__ = ["__version__", "load_pretrained"]


def __getattr__(name: str):
    # lazy, so that `molediff --version` and `--help` do not import torch
    if name == "load_pretrained":
        from molediff.sampling import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'molediff' has no attribute {name!r}")
