"""The sampler table: every reverse-process sampler by name, with what it supports.

Plain Python (no torch), so that the CLI's choices and help, the request checks
(:meth:`molediff.sampling.MoleculeGenerator.check_sampling`, :func:`molediff.diffusion.check_sampler`)
and the sampler tag written into sample files all come from here. Each row names its loop in
:data:`molediff.diffusion.samplers.RUNNERS`: adding a sampler is one loop and one row.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FINISH_GRIDS", "SAMPLERS", "SAMPLER_TABLE", "SPACINGS", "Sampler"]


@dataclass(frozen=True)
class Sampler:
    """One row: ``name`` (also its loop's key in ``RUNNERS``), ``noise`` — when it injects fresh noise,
    so when a noise scale means anything: "always", "eta" (DDIM: only with η > 0) or "never" (a
    deterministic solver) —, ``resample`` (takes RePaint rounds), ``all_steps`` (runs all T steps:
    ancestral DDPM; the others take a step count) and a one-line ``help``."""

    name: str
    noise: str
    resample: bool
    all_steps: bool
    help: str

    @property
    def run(self) -> str:
        return self.name

    def injects_noise(self, eta: float = 0.0) -> bool:
        """Whether this sampler draws fresh noise at ``eta`` (so whether a noise scale means anything)."""
        return self.noise == "always" or (self.noise == "eta" and eta > 0)

    def tag(self, steps: int, eta: float, noise_scale: float, spacing: str = "trailing") -> str:
        """How a sample file names the run: sampler and steps, η where it has one, the spacing where not the
        default, the noise scale where noise is injected (e.g. ``ddim75_eta1_noise0.8``, ``dpm++2m20``)."""
        out = self.name if self.all_steps else f"{self.name}{steps}"
        out += f"_eta{eta:g}" if self.noise == "eta" else ""
        out += "" if self.all_steps or spacing == "trailing" else f"_{spacing}"
        return out + (f"_noise{noise_scale:g}" if self.injects_noise(eta) else "")


SAMPLER_TABLE: dict[str, Sampler] = {s.name: s for s in (
    Sampler("ddim", "eta", True, False, "DDIM over --steps strided steps (up to T); --eta 0 deterministic, 1 DDPM-like"),
    Sampler("ddpm", "always", True, True, "ancestral DDPM over all T steps (Ho et al. 2020)"),
    Sampler("dpm++2m", "never", False, False, "DPM-Solver++ 2M multistep, deterministic"),
    Sampler("dpm++2m-sde", "always", False, False, "DPM-Solver++ 2M, its stochastic (SDE) variant"),
    Sampler("dpm++3m", "never", False, False, "DPM-Solver++ 3M multistep, deterministic"),
)}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_TABLE)
#: the finishing levels of each "finish" spacing, as fractions of T: the last points of the 75-step trailing
#: grid, where a few-step student's lookup-rule geometry was measured to come right when sampled there
#: (benchmarks/README.md, issue 38): "finish" its last two (t = 26 and 12 of 1000), "finish4" its last four
#: (t = 52, 39, 26 and 12; the teacher's four from t = 52 after a student's coarse steps: 96% lookup molecule
#: stability against 91% for the last two)
FINISH_GRIDS: dict[str, tuple[float, ...]] = {"finish": (2 / 75, 1 / 75), "finish4": (4 / 75, 3 / 75, 2 / 75, 1 / 75)}
#: where strided samplers put their steps (:meth:`molediff.diffusion.NoiseSchedule.set_timesteps`):
#: evenly in t from T − 1 ("trailing"), evenly in log-SNR ("logsnr"), or trailing with the last steps at
#: finishing levels of 75 trailing steps (:data:`FINISH_GRIDS`: a few-step student's grid)
SPACINGS: tuple[str, ...] = ("trailing", "logsnr", *FINISH_GRIDS)
