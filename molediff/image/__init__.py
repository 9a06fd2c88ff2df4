"""The image backend: a small U-Net that exercises the shared DDPM core on 8x8 digits.

It exists to check the diffusion math end to end in a domain where the result can be judged by
eye (``molediff image-demo``). The molecule model never imports it.
"""

from molediff.image.unet import UNet

__all__ = ["UNet"]
