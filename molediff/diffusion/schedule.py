"""The DDPM noise schedule: the one object that owns betas and alphas.

Everything is precomputed in float64 and stored in float32. Timesteps are integers ``0 .. T-1``;
``t = 0`` is the least noisy level (its reverse step returns the clean sample, adding no noise).

Notation (Ho et al. 2020): β_t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s,
q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) with
β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t).

Networks never see this object: they get ``(x_t, t)`` and return a prediction of the kind named by
``prediction_type`` ("epsilon": the noise; "sample": the clean x_0, as diffusers names them); the
schedule is the one home of the x̂_0 ↔ ε̂ conversion and of the reverse steps.

Every method works on tensors and on state objects that support ``+ − × ÷`` with scalars and with
each other plus ``noise_like(generator)`` (e.g. a molecule made of several parts): the math is
applied to each part unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np
import torch

from molediff.diffusion.noise import randint, randn
from molediff.diffusion.sampler_table import FINISH_GRIDS


def _clip_alphas_cumprod(alphas2: np.ndarray, clip: float = 0.001) -> np.ndarray:
    """Clip per-step ratios α_t = ᾱ_t / ᾱ_{t−1} from below (as EDM does) so no single step is too large."""
    alphas2 = np.concatenate([np.ones(1), alphas2], axis=0)
    steps = np.clip(alphas2[1:] / alphas2[:-1], a_min=clip, a_max=1.0)
    return np.cumprod(steps, axis=0)


PREDICTION_TYPES = ("epsilon", "sample")


def trailing_timesteps(T: int, n: int) -> np.ndarray:
    """The "trailing" grid of :meth:`NoiseSchedule.set_timesteps`: round(T − i·T/n) − 1, i = 0 .. n−1 [n]."""
    # np.arange's length is ceil(T / (T/n)) in floating point: n, or n + 1 when T/n rounds down;
    # the first n points are the grid (the n-th is T/n ≥ 1, so every timestep is ≥ 0)
    return np.round(np.arange(T, 0, -T / n)[:n]).astype(np.int64) - 1


def finish_timesteps(T: int, n: int, spacing: str = "finish") -> np.ndarray:
    """A "finish" grid of :meth:`NoiseSchedule.set_timesteps` [n]: the trailing grid of n − k steps, then the k
    levels :data:`FINISH_GRIDS` [``spacing``] × T. Raises ``ValueError`` where it does not exist: fewer than
    k + 1 steps, or so many that the coarse part already reaches the finishing levels."""
    levels = FINISH_GRIDS[spacing]
    k = len(levels)
    if n < k + 1:
        raise ValueError(f"the {spacing} spacing needs at least {k + 1} steps ({k} of them finishing), got {n}")
    fine = [round(f * T) - 1 for f in levels]
    # at a small T the levels round together (or below 0): no step count has the grid
    distinct = all(a > b for a, b in zip(fine, fine[1:])) and fine[-1] >= 0

    def fits(m: int) -> bool:
        return distinct and bool(trailing_timesteps(T, m - k)[-1] > fine[0])

    if not fits(n):
        most = max((m for m in range(k + 1, n) if fits(m)), default=None)
        raise ValueError(f"the {spacing} spacing at T = {T} takes " + (f"at most {most} steps" if most else "no step count")
                         + f" (its coarse steps must end above its finishing levels {', '.join(map(str, fine))}), got {n}")
    return np.concatenate([trailing_timesteps(T, n - k), np.array(fine, dtype=np.int64)])


class NoiseSchedule:
    """A discrete-time DDPM schedule with T steps.

    Args:
        betas: float64 array of shape ``[T]`` with values in (0, 1).

    Use the constructors :meth:`linear`, :meth:`cosine` and :meth:`polynomial` for the usual schedules.
    """

    def __init__(self, betas: np.ndarray | torch.Tensor, name: str = "custom", prediction_type: str = "epsilon") -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.prediction_type = prediction_type
        b = np.asarray(betas.cpu().numpy() if isinstance(betas, torch.Tensor) else betas, dtype=np.float64)
        if b.ndim != 1 or len(b) < 1 or not np.all((b > 0) & (b < 1)):
            raise ValueError("betas must be a 1-D array with values in (0, 1)")
        self.name = name
        self.num_train_timesteps = len(b)
        alphas = 1.0 - b
        ac = np.cumprod(alphas)
        ac_prev = np.concatenate([[1.0], ac[:-1]])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.betas = f32(b)
        self.alphas = f32(alphas)
        self.alphas_cumprod = f32(ac)
        self.alphas_cumprod_prev = f32(ac_prev)
        self.sqrt_alphas_cumprod = f32(np.sqrt(ac))
        self.sqrt_one_minus_alphas_cumprod = f32(np.sqrt(1.0 - ac))
        self.sqrt_recip_alphas_cumprod = f32(np.sqrt(1.0 / ac))
        self.sqrt_recipm1_alphas_cumprod = f32(np.sqrt(1.0 / ac - 1.0))
        self.posterior_variance = f32(post_var)
        self.posterior_mean_coef1 = f32(b * np.sqrt(ac_prev) / (1.0 - ac))
        self.posterior_mean_coef2 = f32((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac))
        # float64 ᾱ for the solver coefficients (α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), λ_t = log(α_t/σ_t))
        self.alphas_cumprod64 = torch.from_numpy(ac.copy())
        self.log_snr64 = torch.from_numpy(0.5 * (np.log(ac) - np.log1p(-ac)))
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Ho et al.'s linear β schedule (β from 1e-4 to 0.02 for T = 1000)."""
        return cls(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64), name="linear")

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal's cosine schedule: ᾱ(u) ∝ cos²((u + s)/(1 + s) · π/2), β clipped at ``max_beta``."""
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = [min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta) for i in range(num_timesteps)]
        return cls(np.array(betas, dtype=np.float64), name="cosine")

    @classmethod
    def polynomial(cls, num_timesteps: int = 1000, power: float = 2.0, s: float = 1e-5) -> "NoiseSchedule":
        """The schedule of equivariant molecule diffusion (Hoogeboom et al. 2022, "polynomial_2").

        ᾱ(u) = (1 − u^power)² on u = i/T, per-step ratios clipped at 0.001, then squeezed to
        [s, 1 − s] so that neither end is exactly noise-free or pure noise. Index t uses u = (t+1)/T.
        """
        u = np.linspace(0, 1, num_timesteps + 1, dtype=np.float64)
        alphas2 = (1 - u**power) ** 2
        alphas2 = _clip_alphas_cumprod(alphas2)  # length T+1, starting at u=0
        precision = 1 - 2 * s
        ac_full = precision * alphas2 + s  # ᾱ at u = 0 .. 1
        betas = 1 - ac_full[1:] / ac_full[:-1]
        # ac_full[0] = 1 − s, so fold that tiny first factor into β_0 to keep ᾱ_t = ac_full[t+1]
        betas[0] = 1 - ac_full[1]
        return cls(betas, name=f"polynomial_{power:g}")

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000, prediction_type: str = "epsilon") -> "NoiseSchedule":
        """``"linear"``, ``"cosine"`` or ``"polynomial"`` / ``"polynomial_P"`` (power P, default 2)."""
        if name == "linear":
            out = cls.linear(num_timesteps)
        elif name == "cosine":
            out = cls.cosine(num_timesteps)
        elif name.startswith("polynomial"):
            power = float(name.split("_", 1)[1]) if "_" in name else 2.0
            out = cls.polynomial(num_timesteps, power=power)
        else:
            out = None
        if out is not None:
            if prediction_type not in PREDICTION_TYPES:
                raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
            out.prediction_type = prediction_type  # the tables do not depend on it
            return out
        raise ValueError(f"unknown noise schedule {name!r}; choose linear, cosine or polynomial[_P]")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _gather(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Values of ``table`` at ``t`` shaped to broadcast against ``like``.

        ``t`` is an int (same step for all rows) or a LongTensor of shape ``[like.shape[0]]`` (one step per row).
        """
        if isinstance(t, int) or (isinstance(t, torch.Tensor) and t.ndim == 0):
            return table[int(t)].to(device=like.device, dtype=like.dtype)
        if not isinstance(like, torch.Tensor):
            raise TypeError("per-row timesteps need a tensor; a state object maps its parts' rows itself")
        out = table.to(like.device)[t.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniformly random training timesteps, LongTensor ``[n]``."""
        return randint(self.num_train_timesteps, (n,), generator=generator, device=device)

    # ------------------------------------------------------------------ forward process
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for any shape; ``t`` per row (``[x0.shape[0]]``) or an int."""
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * x0 + self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw x_t ~ q(x_t | x_0) for a tensor ``x0``; returns ``(x_t, noise)`` (``noise``: given, or
        drawn from ``generator``). A state with its own subspace draws its noise itself (``noise_like``)
        and calls :meth:`add_noise`."""
        if noise is None:
            noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.add_noise(x0, noise, t), noise

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_t | x_0)."""
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * x0, self._gather(1.0 - self.alphas_cumprod, t, x0)

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean μ̃_t and variance β̃_t of q(x_{t−1} | x_t, x_0)."""
        mean = self._gather(self.posterior_mean_coef1, t, x_t) * x0 + self._gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._gather(self.posterior_variance, t, x_t)

    # ------------------------------------------------------------------ parametrisations
    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
        return self._gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - self._gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        ) * eps

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor | int, x0: torch.Tensor) -> torch.Tensor:
        """ε̂ = (x_t − √ᾱ_t x̂_0) / √(1 − ᾱ_t)."""
        return (x_t - self._gather(self.sqrt_alphas_cumprod, t, x_t) * x0) / self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        )

    def to_eps(self, model_output: Any, x_t: Any, t: torch.Tensor | int) -> Any:
        """ε̂ from a network output of this schedule's ``prediction_type``."""
        if self.prediction_type == "epsilon":
            return model_output
        return self.predict_eps_from_x0(x_t, t, model_output)

    # ------------------------------------------------------------------ reverse process
    def step(
        self,
        model_output: Any,
        t: int,
        x_t: Any,
        noise: Any = None,
        variance: Literal["fixed_small", "fixed_large"] = "fixed_small",
    ) -> Any:
        """One ancestral step x_t → x_{t−1} from a network output (ε or x_0, see ``prediction_type``).

        x_{t−1} = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε) + σ_t z, σ_t² = β̃_t ("fixed_small") or β_t
        ("fixed_large"); no noise is added at t = 0. ``noise`` z: the caller's draw (already
        scaled/projected; the samplers draw it from their generator), needed for t > 0.
        """
        if variance not in ("fixed_small", "fixed_large"):
            raise ValueError(f"variance must be 'fixed_small' or 'fixed_large', got {variance!r}")
        t = int(t)
        eps = self.to_eps(model_output, x_t, t)
        mean = (x_t - self.betas[t] / self.sqrt_one_minus_alphas_cumprod[t] * eps) / torch.sqrt(self.alphas[t])
        if t == 0:
            return mean
        if noise is None:
            raise ValueError("a reverse step with t > 0 needs its noise")
        var = self.posterior_variance[t] if variance == "fixed_small" else self.betas[t]
        return mean + torch.sqrt(var) * noise

    def renoise(self, x_prev: Any, prev_t: int, t: int, noise: Any) -> Any:
        """Forward from level ``prev_t`` back up to ``t`` > prev_t: a draw of q(x_t | x_prev) =
        N(√(ᾱ_t/ᾱ_prev) x_prev, (1 − ᾱ_t/ᾱ_prev) I) (RePaint's resampling jump; ``prev_t`` ≥ 0)."""
        ratio = (self.alphas_cumprod[int(t)].double() / self.alphas_cumprod[int(prev_t)].double())
        return torch.sqrt(ratio).to(x_prev.dtype) * x_prev + torch.sqrt(1 - ratio).to(x_prev.dtype) * noise

    def set_timesteps(self, num_inference_steps: int, spacing: str = "trailing") -> torch.Tensor:
        """Exactly ``num_inference_steps`` distinct, decreasing timesteps in ``[0, T−1]`` for strided sampling.

        "trailing" starts at T−1 (recommended: the first step sees pure noise): round(T − i·T/n) − 1 for
        i = 0 .. n−1, the grid of diffusers' ``timestep_spacing="trailing"`` (whose ``np.arange`` can yield
        one extra point, −1, for some n; that point is not part of the grid). "logsnr" starts at T−1 and ends
        at 0, uniform in log-SNR λ_t = log(α_t/σ_t) between them (as Lu et al.'s DPM-Solver), each point
        rounded to the nearest timestep; where rounding makes two points meet (many steps, fast-changing
        λ near t = 0), the later one moves down to the next free timestep, so there are always n.
        "finish" (n ≥ 3): the trailing grid of n − 2 steps, then two finishing steps at the levels
        :data:`FINISH_GRIDS` ["finish"] × T, where 75 trailing steps end (a few-step student's coarse steps lay
        out the molecule; its last two make the bond lengths as exact as the lookup rule reads them);
        "finish4" (n ≥ 5) the same with the last four levels of 75 trailing steps.
        """
        T = self.num_train_timesteps
        n = num_inference_steps
        if not 1 <= n <= T:
            raise ValueError(f"number of steps must be between 1 and {T}, got {n}")
        if spacing == "trailing":
            ts = trailing_timesteps(T, n)
        elif spacing == "logsnr":
            ts = self._logsnr_timesteps(n)
        elif spacing in FINISH_GRIDS:
            ts = finish_timesteps(T, n, spacing)
        else:
            raise ValueError(f"unknown spacing {spacing!r}; choose trailing, logsnr, {', '.join(FINISH_GRIDS)}")
        self.timesteps = torch.from_numpy(ts.copy())
        return self.timesteps

    def _logsnr_timesteps(self, n: int) -> np.ndarray:
        T = self.num_train_timesteps
        lam = self.log_snr64.numpy()  # strictly decreasing in t
        if n == 1:
            return np.array([T - 1], dtype=np.int64)
        targets = np.linspace(lam[T - 1], lam[0], n)
        u = np.interp(targets, lam[::-1], np.arange(T - 1, -1, -1, dtype=np.float64))  # fractional timesteps
        ts = np.round(u).astype(np.int64)
        ts[0] = T - 1
        for i in range(1, n):  # strictly below the previous point, leaving room for the n − 1 − i after it
            ts[i] = max(min(ts[i], ts[i - 1] - 1), n - 1 - i)
        return ts

    def ddim_step(
        self,
        model_output: Any,
        t: int,
        prev_t: int,
        x_t: Any,
        eta: float = 0.0,
        noise: Any = None,
    ) -> Any:
        """One DDIM step x_t → x_{prev_t} (Song et al. 2021); ``prev_t < 0`` means ᾱ = 1 (the clean sample).

        σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev); η = 0 is deterministic, η = 1 matches DDPM's
        variance; ``noise`` (the caller's draw) is needed where σ > 0 (η > 0 and ``prev_t`` ≥ 0).
        """
        eps = self.to_eps(model_output, x_t, int(t))
        a_t = self.alphas_cumprod[int(t)].double()
        a_prev = self.alphas_cumprod[int(prev_t)].double() if prev_t >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x_t - torch.sqrt(1 - a_t).to(x_t.dtype) * eps) / torch.sqrt(a_t).to(x_t.dtype)
        sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)
        direction = torch.sqrt(torch.clamp(1 - a_prev - sigma**2, min=0.0)).to(x_t.dtype) * eps
        x_prev = torch.sqrt(a_prev).to(x_t.dtype) * x0 + direction
        if eta > 0 and prev_t >= 0:
            if noise is None:
                raise ValueError("a stochastic DDIM step (eta > 0) needs its noise")
            x_prev = x_prev + sigma.to(x_t.dtype) * noise
        return x_prev

    # ------------------------------------------------------------------ DPM-Solver++ (Lu et al. 2022)
    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) as float64 Python scalars; ``t < 0`` is the clean level (1, 0)."""
        if t < 0:
            return 1.0, 0.0
        ac = float(self.alphas_cumprod64[int(t)])
        return math.sqrt(ac), math.sqrt(1.0 - ac)

    def data_prediction(self, model_output: Any, x_t: Any, t: int) -> Any:
        """x̂_0 with float64 scalar coefficients, x̂_0 = (x_t − σ_t ε̂)/α_t for ε-prediction: the one
        x̂_0 conversion of the solvers (:meth:`to_eps` is the other direction)."""
        if self.prediction_type == "sample":
            return model_output
        alpha, sigma = self.alpha_sigma(int(t))
        return (x_t - sigma * model_output) / alpha

    def dpm_solver_step(self, x0_hist: Sequence[Any], t_hist: Sequence[int], prev_t: int, x_t: Any,
                        stochastic: bool = False, noise: Any = None) -> Any:
        """One DPM-Solver++ multistep update x_t → x_{prev_t} (Lu et al. 2022, "2M"/"3M"; diffusers'
        ``DPMSolverMultistepScheduler`` with ``solver_type="midpoint"``).

        ``x0_hist``: the last k ∈ {1, 2, 3} data predictions x̂_0 (oldest first; the order is k) at the
        timesteps ``t_hist`` (the newest is the current t). With h = λ_{prev} − λ_t and α, σ, λ from
        :meth:`alpha_sigma`, the deterministic update (``algorithm_type="dpmsolver++"``) is
        x = (σ_prev/σ_t) x_t − α_prev (e^{−h} − 1) D0 (+ higher-order terms in D1, D2, the scaled
        differences of the history); the stochastic one (``"sde-dpmsolver++"``) is
        x = (σ_prev/σ_t) e^{−h} x_t + α_prev (1 − e^{−2h}) D0 + … + σ_prev √(1 − e^{−2h}) ``noise``.
        ``prev_t < 0`` (σ = 0, λ = ∞) returns the newest x̂_0 itself: every order and variant ends there.
        Only ``+ − ×`` with Python floats touch the state, so state objects work unchanged.
        """
        k = len(x0_hist)
        if k not in (1, 2, 3) or len(t_hist) != k:
            raise ValueError("dpm_solver_step needs 1 to 3 x̂0 predictions and as many timesteps")
        if prev_t < 0:
            return x0_hist[-1]
        if stochastic and noise is None:
            raise ValueError("the stochastic update needs noise")
        a_t, s_t = self.alpha_sigma(prev_t)
        lam = lambda t: float(self.log_snr64[int(t)])  # noqa: E731
        lam_t, lam_s = lam(prev_t), [lam(t) for t in t_hist]
        _, s_s0 = self.alpha_sigma(t_hist[-1])
        h = lam_t - lam_s[-1]
        m0 = x0_hist[-1]
        # D0, D1, D2 exactly as diffusers forms them (r_i: ratios of the previous log-SNR steps to h)
        D1 = D2 = None
        if k == 2:
            r0 = (lam_s[-1] - lam_s[-2]) / h
            D1 = (1.0 / r0) * (m0 - x0_hist[-2])
        elif k == 3:
            r0, r1 = (lam_s[-1] - lam_s[-2]) / h, (lam_s[-2] - lam_s[-3]) / h
            D1_0, D1_1 = (1.0 / r0) * (m0 - x0_hist[-2]), (1.0 / r1) * (x0_hist[-2] - x0_hist[-3])
            D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
            D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
        if not stochastic:
            em1 = math.expm1(-h)  # e^{−h} − 1
            x = (s_t / s_s0) * x_t - (a_t * em1) * m0
            if k == 2:
                x = x - (0.5 * a_t * em1) * D1
            elif k == 3:
                x = x + (a_t * (em1 / h + 1.0)) * D1 - (a_t * ((em1 + h) / h**2 - 0.5)) * D2
            return x
        om2 = -math.expm1(-2.0 * h)  # 1 − e^{−2h}
        x = (s_t / s_s0 * math.exp(-h)) * x_t + (a_t * om2) * m0
        if k == 2:
            x = x + (0.5 * a_t * om2) * D1
        elif k == 3:
            x = x + (a_t * (om2 / (-2.0 * h) + 1.0)) * D1 + (a_t * ((om2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5)) * D2
        return x + (s_t * math.sqrt(om2)) * noise

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name}, T={self.num_train_timesteps}, prediction_type={self.prediction_type!r})"
