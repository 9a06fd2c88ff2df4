"""molediff: 3D molecule generation with denoising diffusion.

One DDPM core (:mod:`molediff.diffusion`) shared by an E(3)-equivariant graph network for molecules
and a small image U-Net that checks the same math in the image domain.
"""

__version__ = "0.1.0"
