"""The domain-agnostic DDPM core shared by the molecule and image backends."""

from molediff.diffusion.losses import epsilon_loss
from molediff.diffusion.samplers import SAMPLER_TABLE, SAMPLERS, SPACINGS, Sampler, check_sampler, ddim_sample, ddpm_sample, dpm_solver_sample, sample
from molediff.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule", "ddpm_sample", "ddim_sample", "dpm_solver_sample", "sample", "SAMPLERS", "SAMPLER_TABLE", "SPACINGS",
           "Sampler", "check_sampler", "epsilon_loss"]
