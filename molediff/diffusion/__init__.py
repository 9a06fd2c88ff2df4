"""The domain-agnostic DDPM core shared by the molecule and image backends."""

from molediff.diffusion.losses import epsilon_loss
from molediff.diffusion.samplers import SAMPLERS, ddim_sample, ddpm_sample, dpm_solver_sample, sample
from molediff.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule", "ddpm_sample", "ddim_sample", "dpm_solver_sample", "sample", "SAMPLERS", "epsilon_loss"]
