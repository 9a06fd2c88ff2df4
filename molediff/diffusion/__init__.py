"""The domain-agnostic DDPM core shared by the molecule and image backends."""

from molediff.diffusion.losses import epsilon_loss
from molediff.diffusion.samplers import ddim_sample, ddpm_sample, sample
from molediff.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule", "ddpm_sample", "ddim_sample", "sample", "epsilon_loss"]
