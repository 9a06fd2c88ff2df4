"""Sampling molecules: ``molediff sample`` and :func:`load_pretrained`.

Molecules are generated in batches; batch ``i`` uses a random stream derived from ``(seed, i)``
alone, so the same seed and batch size give the same molecules, and batches can be sharded across
processes without changing the result. Molecules whose sampling diverged (non-finite coordinates or
collapsed atoms) are never written: they are counted and more are sampled until ``n`` are delivered.
Output streams to the file record by record (memory stays bounded for any ``n``); it appears
atomically when sampling finishes, and an interrupted run keeps only complete records.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from molediff.checkpoint import load_model_file
from molediff.conditioning import check_conditions, condition_table, sizes_for_conditions
from molediff.config import BUNDLED_MODELS, COMPILE_MIN_MOLECULE_STEPS, DEFAULT_ETA, DEFAULT_NOISE_SCALE, DEFAULT_RESAMPLE, DEFAULT_STEPS, MAX_NOISE_SCALE, TrainConfig
from molediff.elements import ELEMENTS
from molediff.state import MolState
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import SELF_CONDITION_FEEDBACK, MolecularDiffusion, draw_sizes, finite_molecules

#: what `molediff sample` and :func:`load_pretrained` use unless told otherwise: the joint model, since it
#: passed the shipping floor (benchmarks/README.md); "qm9" stays available by name
DEFAULT_MODEL = "qm9-joint"
#: what `molediff sample --fragment` uses unless told otherwise: the model trained to grow fragments
FRAGMENT_MODEL = "qm9-frag"


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    if name not in BUNDLED_MODELS:
        raise UserError(f"unknown bundled model {name!r}; choose one of {', '.join(BUNDLED_MODELS)}")
    return Path(str(resources.files("molediff") / "pretrained" / BUNDLED_MODELS[name]))


def compiler_available(device: torch.device | str = "cpu") -> bool:
    """Whether ``torch.compile`` can be expected to work on ``device``: on CPU, inductor builds C++ (it
    needs ``$CXX`` or a ``c++``/``g++``/``clang++`` on the PATH); on CUDA, it needs Triton. Where this says
    yes and compiling still fails, the network runs eagerly with a warning (:meth:`MoleculeGenerator.compile`).
    On CPU it also needs Python's headers (``Python.h``)."""
    import importlib.util
    import os
    import shutil
    import sysconfig

    if torch.device(device).type == "cuda":
        return importlib.util.find_spec("triton") is not None
    cxx = os.environ.get("CXX")
    has_cxx = any(shutil.which(c) for c in ([cxx] if cxx else []) + ["c++", "g++", "clang++"])
    # the code inductor builds includes Python's headers, which some installs lack (python3-dev)
    return has_cxx and (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


def batch_generator(seed: int, index: int) -> torch.Generator:
    """The random stream of batch ``index`` for a user's ``seed`` (independent of other batches)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class SampleRequest:
    """What a user asked of a model, checked and resolved once (:meth:`MoleculeGenerator.request`):
    ``steps`` and ``noise_scale`` with the model's defaults filled in, ``n_atoms`` a size range or None
    (the training histogram), ``fragment`` as the model reads it, ``resample`` the RePaint rounds it
    runs, ``conditions`` checked (values, per-molecule sequences or :class:`~molediff.conditioning.Range`).
    ``first_batch``/``batch_stride`` shard the batches across processes. :meth:`MoleculeGenerator.run`
    samples it; the CLI and the API build it the same way."""

    n: int
    steps: int
    seed: int
    batch_size: int
    n_atoms: tuple[int, int] | None
    eta: float
    noise_scale: float
    sampler: str
    spacing: str
    fragment: Any
    resample: int
    conditions: dict[str, Any]
    guidance: float
    self_condition_feedback: str
    relax_hydrogens: bool
    first_batch: int = 0
    batch_stride: int = 1
    restarts: int = 0  # rounds of local restarts after each batch (molediff.restarts)
    restart_rings: bool = False  # restarts redraw odd rings of valid molecules too
    steer: float = 0.0  # step size of property steering (molediff.steering); 0: none
    property_model: str = ""  # the property model file steering reads ("": the model file's own)
    restart_ranges: bool = False  # restarts redraw valid molecules with a property outside an asked range / value's band
    restart_from: str = "region"  # what a restart draws again (RESTART_FROM): the failing region, or the whole molecule from noise

    @property
    def molecule_steps(self) -> int:
        """Network evaluations the request's main pass costs, in molecule-steps (n × steps × RePaint rounds)."""
        return self.n * self.steps * max(self.resample, 1)


@dataclass
class SampleStats:
    """What a sampling run (:meth:`MoleculeGenerator.run`) did, counted as it goes."""

    requested: int = 0
    delivered: int = 0
    diverged: int = 0
    batches: int = 0
    seconds: float = 0.0
    restarted: int = 0  # delivered molecules that local restarts regenerated in part
    # network evaluations in molecules: each call of the network adds the molecules it reads, so local restarts,
    # which run again on the failing molecules only, count for those, and guidance's two passes count twice
    evaluations: int = 0

    @property
    def evaluations_per_molecule(self) -> float:
        """Network evaluations per delivered molecule (diverged ones' evaluations included)."""
        return self.evaluations / max(self.delivered, 1)


class CountedNetwork(torch.nn.Module):
    """``net`` as the sampler calls it, adding the molecules each call reads to ``stats.evaluations``.
    Counted outside the network, so a compiled one counts too; wrap it per run, never save it."""

    def __init__(self, net: torch.nn.Module, stats: SampleStats) -> None:
        super().__init__()
        self.net = net
        self.stats = stats

    def forward(self, h: torch.Tensor, pos: torch.Tensor, graph: Any, *args: Any, **kwargs: Any) -> Any:
        self.stats.evaluations += graph.num_graphs
        return self.net(h, pos, graph, *args, **kwargs)


class MoleculeGenerator:
    """A trained model ready to sample. Build with :func:`load_pretrained` or :meth:`from_file`."""

    def __init__(self, net: torch.nn.Module, config: TrainConfig, histogram: torch.Tensor, meta: dict, source: str) -> None:
        self.net = net.eval()
        self.diffusion = MolecularDiffusion(config.diffusion)
        self.config = config
        self.histogram = histogram
        self.meta = meta
        self.source = source
        self.compiled = False  # :meth:`compile` was called (compilation itself happens at the first step)
        self.precision = "float32"  # the network's arithmetic while sampling (:meth:`set_precision`)

    @classmethod
    def from_file(cls, path: str | Path, device: str = "cpu") -> "MoleculeGenerator":
        state, config, meta = load_model_file(path)
        net = build_network(config.model, MolecularDiffusion(config.diffusion))
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"{path}: weights do not fit the saved config ({exc})") from None
        hist = meta.get("size_histogram")
        if hist is None:
            from molediff.data.qm9 import train_size_histogram

            hist = train_size_histogram()
        return cls(net.to(device), config, torch.as_tensor(hist), meta, str(path))

    @property
    def writes_bonds(self) -> bool:
        """Whether the model generates its own bonds and formal charges (a joint model)."""
        return self.config.diffusion.bonds

    @property
    def conditions(self) -> list[str]:
        """The properties this model can be conditioned on (empty: an unconditional model)."""
        return list(self.config.diffusion.conditions)

    def check_conditions(self, conditions: dict[str, Any] | None, guidance: float = 1.0, fragment: Any = None) -> dict[str, Any]:
        """``conditions`` checked against this model (names, finite values inside the training range),
        the guidance weight and the request as a whole (no fragment with conditions); raises
        :class:`UserError` saying what is wrong. The one home of these checks (API and CLI)."""
        dcfg = self.config.diffusion
        if conditions and fragment is not None:  # first: the advice below would lead here
            raise UserError("growing a fragment under property conditions (--condition with --fragment) is not supported; "
                            "use one or the other")
        if conditions and not dcfg.conditions:
            raise UserError("this model is not conditioned on properties; use a conditional model: --model qm9-cond for "
                            "QM9's properties, --model druglike-cond for drug-like ones (qed, logp, mw, ...), or one "
                            "trained with 'molediff train --init-from MODEL --diffusion-conditions ...'")
        conditions = check_conditions(conditions or {}, dcfg.conditions, dcfg.condition_stats)
        if not guidance >= 0 or guidance == float("inf"):
            raise UserError(f"--guidance must be a finite number ≥ 0, got {guidance}")
        if guidance != 1.0 and not conditions:
            raise UserError("--guidance applies to sampling with conditions (--condition); give at least one condition")
        return conditions

    def check_sampling(self, n: int, steps: int | None, seed: int, eta: float, noise_scale: float | None, sampler: str = "ddim",
                       spacing: str = "trailing", fragment: Any = None, resample: int | None = None,
                       flags: bool = False, self_condition_feedback: str = "guided") -> int:
        """The one home of the sampling request's checks (the API runs them; the CLI calls them, with
        ``flags`` naming its options, before it creates any output): raises :class:`UserError`. Returns
        the step count the request runs (``steps`` None: :data:`~molediff.config.DEFAULT_STEPS`, or T for
        a model with fewer steps; all T for the "ddpm" sampler). ``noise_scale`` None: the model's default;
        a noise scale given for a sampler that injects no noise (a deterministic solver, DDIM at η = 0)
        is refused rather than silently ignored."""
        from molediff.diffusion.samplers import check_sampler
        from molediff.diffusion.sampler_table import SAMPLER_TABLE, SAMPLERS, SPACINGS

        name = (lambda k: "--" + k.replace("_", "-")) if flags else (lambda k: k)  # noqa: E731
        T = self.diffusion.schedule.num_train_timesteps
        spec = SAMPLER_TABLE.get(sampler)
        if steps is None:
            steps = T if spec is not None and spec.all_steps else min(self.default_steps, T)
        checks = [
            (n >= 1, f"{name('n')} must be ≥ 1, got {n}"),
            (seed >= 0, f"{name('seed')} must be ≥ 0, got {seed}"),
            (spec is not None, f"unknown {name('sampler')} {sampler!r}; choose one of {', '.join(SAMPLERS)}"),
            (1 <= steps <= T, f"{name('steps')} must be between 1 and {T} (this model's T), got {steps}"),
            (spec is None or not spec.all_steps or steps == T,
             f"the {sampler} sampler runs all {T} steps of this model; leave {name('steps')} out or use ddim"),
            (0.0 <= eta <= 1.0, f"{name('eta')} must be between 0 and 1, got {eta:g}"),
            (noise_scale is None or 0.0 <= noise_scale <= MAX_NOISE_SCALE,
             f"{name('noise_scale')} must be between 0 and {MAX_NOISE_SCALE:g}, got {noise_scale}"),
            (noise_scale is None or spec is None or spec.injects_noise(eta),
             f"{name('noise_scale')} has no effect with {sampler}" + (f" at {name('eta')} 0" if sampler == "ddim" else "")
             + f": it injects no noise; leave {name('noise_scale')} out, or use a stochastic sampler "
             f"({', '.join(k for k, v in SAMPLER_TABLE.items() if v.noise == 'always')}, or ddim with {name('eta')} > 0)"),
            (spacing in SPACINGS, f"{name('spacing')} must be one of {', '.join(SPACINGS)}, got {spacing!r}"),
            (resample is None or resample >= 1, f"{name('resample')} must be ≥ 1, got {resample}"),
            (resample in (None, 1) or fragment is not None,
             f"{name('resample')} (RePaint rounds) applies to growing a fragment; give a fragment or leave it out"),
            (resample in (None, 1) or spec is None or spec.resample,
             f"{name('resample')} (RePaint rounds) works with the {', '.join(k for k, v in SAMPLER_TABLE.items() if v.resample)} "
             f"samplers, not {sampler}"),
            (self_condition_feedback in SELF_CONDITION_FEEDBACK,
             f"self_condition_feedback must be one of {', '.join(SELF_CONDITION_FEEDBACK)}, got {self_condition_feedback!r}"),
            # growing a fragment with a model not trained on fragments inpaints with RePaint rounds by default
            (fragment is None or resample is not None or spec is None or spec.resample or self.resample_rounds(fragment) == 1,
             f"growing a fragment with this model (not trained on fragments) uses RePaint rounds, which need the ddim "
             f"sampler: use {name('sampler')} ddim, or {name('resample')} 1 to inpaint with {sampler} without them"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        try:  # the core's own rules (the table's), should any be missed above
            check_sampler(sampler, None if spec.all_steps else steps, T, eta, resample or 1, spacing)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return steps

    def sampler_tag(self, sampler: str, steps: int, eta: float, noise_scale: float, spacing: str = "trailing") -> str:
        """How a sample file names the sampler settings (the table's :meth:`~molediff.diffusion.samplers.Sampler.tag`)."""
        from molediff.diffusion.sampler_table import SAMPLER_TABLE

        return SAMPLER_TABLE[sampler].tag(steps, eta, noise_scale, spacing)

    def resample_rounds(self, fragment: Any = None, resample: int | None = None) -> int:
        """RePaint rounds per step: ``resample`` when given, else ``DEFAULT_RESAMPLE`` for growing a
        fragment by inpainting (a model not trained on fragments) and 1 otherwise."""
        if resample is not None:
            return resample
        return DEFAULT_RESAMPLE if fragment is not None and not self.config.diffusion.fragments else 1

    def compile(self) -> "MoleculeGenerator":
        """Compile the network with ``torch.compile`` (in place; returns self).

        On a 2-core CPU, 1,000 molecules at 100 steps took 136 s instead of 233 s (the warm-up included: ~7 s with
        inductor's cache warm, ~30 s the first time); 100 molecules do not repay the warm-up. Coordinates agree with
        eager ones to ~1e-4 Å (float rounding). Needs a C++ compiler on CPU (inductor): compilation
        happens at the first network call, and if it fails there the network runs eagerly, with a
        warning, instead of failing the run.
        """
        self.net.compile(dynamic=True)  # dynamic: every batch has its own atom and edge counts
        self.compiled = True
        return self

    def set_precision(self, name: str) -> "MoleculeGenerator":
        """Sample with the network's matrix products in ``name``'s arithmetic (returns self): "float32"
        (the default of this API), "bfloat16" (:class:`~molediff.models.precision.Autocast`: about 2×
        faster per step on a CPU with native bfloat16, at the same quality; benchmarks/README.md) or "auto"
        (bfloat16 where the device has it natively, the default of ``molediff sample``)."""
        from molediff.models.precision import resolve_precision

        try:
            self.precision = resolve_precision(name, self.device)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return self

    def _network(self) -> Any:
        """The network as the sampler calls it: under autocast for bfloat16 (:meth:`set_precision`)."""
        if self.precision == "float32":
            return self.net
        from molediff.models.precision import Autocast

        return Autocast(self.net, getattr(torch, self.precision))

    def compile_pays(self, req: "SampleRequest") -> bool:
        """Whether compiling is expected to repay its warm-up for ``req`` (the default of ``molediff
        sample``): at least :data:`COMPILE_MIN_MOLECULE_STEPS` molecule-steps, and the compiler inductor
        needs is here (:func:`compiler_available`)."""
        return req.molecule_steps >= COMPILE_MIN_MOLECULE_STEPS and compiler_available(self.device)

    @property
    def default_noise_scale(self) -> float:
        """The noise scale this model samples at unless told otherwise: the one its file names (chosen by
        its quality table, e.g. 1.0 for a model whose molecules are better at the full temperature), else
        :data:`~molediff.config.DEFAULT_NOISE_SCALE`."""
        return float(self.meta.get("default_noise_scale", DEFAULT_NOISE_SCALE))

    @property
    def default_steps(self) -> int:
        """The steps this model samples in unless told otherwise: its file's (a distilled student's own
        count), else :data:`~molediff.config.DEFAULT_STEPS`."""
        return int(self.meta.get("default_steps", DEFAULT_STEPS))

    @property
    def default_spacing(self) -> str:
        """Where the reverse steps go unless told otherwise: its file's (a few-step student's grid, e.g.
        "finish"), else "trailing"."""
        return str(self.meta.get("default_spacing", "trailing"))

    @property
    def default_eta(self) -> float:
        """DDIM's η unless told otherwise: its file's (0 for a distilled student, which learned the
        deterministic path), else :data:`~molediff.config.DEFAULT_ETA`."""
        return float(self.meta.get("default_eta", DEFAULT_ETA))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def request(
        self,
        n: int,
        steps: int | None = None,
        seed: int = 0,
        batch_size: int = 250,
        n_atoms: int | str | tuple[int, int] | None = None,
        eta: float | None = None,
        noise_scale: float | None = None,
        fragment: Any = None,
        resample: int | None = None,
        conditions: dict[str, Any] | None = None,
        guidance: float = 1.0,
        relax_hydrogens: bool = True,
        sampler: str = "ddim",
        spacing: str | None = None,
        self_condition_feedback: str = "guided",
        first_batch: int = 0,
        batch_stride: int = 1,
        flags: bool = False,
        restarts: int | None = None,
        restart_rings: bool | None = None,
        steer: float | None = None,
        property_model: str | None = None,
        restart_ranges: bool | None = None,
        restart_from: str | None = None,
    ) -> SampleRequest:
        """What the user asked, checked once against this model and resolved (:class:`SampleRequest`;
        arguments as :meth:`sample_arrays`); raises :class:`UserError` saying what is wrong, naming the
        CLI's options when ``flags``. ``steps``, ``eta``, ``noise_scale`` and ``spacing`` None: the model's defaults."""
        eta = self.default_eta if eta is None else eta
        spacing = self.default_spacing if spacing is None else spacing
        steps = self.check_sampling(n, steps, seed, eta, noise_scale, sampler, spacing, fragment, resample,
                                    flags=flags, self_condition_feedback=self_condition_feedback)
        if batch_size < 1:
            raise UserError(f"{'--batch-size' if flags else 'batch_size'} must be ≥ 1, got {batch_size}")
        n_atoms = self._size_range(n_atoms)
        resample = self.resample_rounds(fragment, resample)
        fragment = self._prepared_fragment(fragment)
        if fragment is not None and n_atoms is not None and n_atoms[0] < len(fragment):
            raise UserError(f"the fragment has {len(fragment)} atoms, more than --n-atoms {n_atoms[0]}")
        restarts = self._restart_rounds(restarts, fragment, flags)
        restart_rings = self._restart_rings(restart_rings, restarts, flags)
        conditions = self.check_conditions(conditions, guidance, fragment)
        steer, property_model = self._check_steering(steer, property_model, conditions, flags)
        restart_ranges = self._restart_ranges(restart_ranges, restarts, conditions, flags)
        restart_from = self._restart_from(restart_from, restarts, flags)
        if conditions and n_atoms is None and self.meta.get("condition_table") is None:
            raise UserError("this model has no table of sizes against properties; pass --n-atoms")
        return SampleRequest(n, steps, seed, batch_size, n_atoms, eta,
                             self.default_noise_scale if noise_scale is None else noise_scale, sampler, spacing, fragment,
                             resample, conditions, guidance, self_condition_feedback, relax_hydrogens, first_batch, batch_stride,
                             restarts, restart_rings, steer, property_model, restart_ranges, restart_from)

    @property
    def default_steer(self) -> float:
        """The steering step size this model samples conditions with unless told otherwise: its file's
        ``default_steer`` where the file carries a property model (``property_model``), else 0."""
        return float(self.meta.get("default_steer", 0.0)) if "property_model" in self.meta else 0.0

    def _check_steering(self, steer: float | None, property_model: str | None, conditions: dict, flags: bool) -> tuple[float, str]:
        """``steer`` and ``property_model`` checked (UserError) and resolved: ``steer`` None is the model's
        :attr:`default_steer` where conditions are asked (else 0); a step > 0 needs conditions and a property
        model for this model's conditions, ``property_model`` or the model file's own (read here once, so
        a wrong file is refused before sampling). Returns ``(steer, path)``: the path resolved, "" for the
        model file's own or without steering."""
        name = "--steer" if flags else "steer"
        if steer is None:
            steer = self.default_steer if conditions else 0.0
        if not (steer >= 0 and math.isfinite(steer)):
            raise UserError(f"{name} must be a finite number ≥ 0, got {steer}")
        if not steer:
            if property_model:
                raise UserError(f"{'--property-model' if flags else 'property_model'} is read only when steering "
                                f"({name} > 0)")
            return 0.0, ""
        if not conditions:
            raise UserError(f"{name} steers towards property targets: give at least one condition (--condition)")
        if not property_model:
            if "property_model" not in self.meta:
                raise UserError(f"{name} needs a property model for this model ({'--property-model' if flags else 'property_model'}"
                                " FILE; 'molediff property-model' trains one)")
            self._property_model("")
            return float(steer), ""
        path = str(Path(property_model).expanduser().resolve())
        self._property_model(path)
        return float(steer), path

    def _property_model(self, path: str) -> Any:
        """The property model of file ``path`` (resolved, as a request holds it; "": the one the model file
        carries) for this model, read once."""
        from molediff.steering import PropertyModel

        cache = self.__dict__.setdefault("_property_models", {})
        if path not in cache:
            cache[path] = (PropertyModel.from_dict(self.meta["property_model"], self.diffusion, "the model file's property model")
                           if path == "" else PropertyModel.load(path, self.diffusion))
        return cache[path]

    @staticmethod
    def _ranges(req: SampleRequest) -> dict[str, tuple[float, float]] | None:
        """{RDKit descriptor: (lo, hi)} that the request's restarts check (None: no check): each asked range,
        and each value asked of every molecule as its band (:func:`molediff.conditioning.target_band`);
        per-molecule targets are not checked."""
        from molediff.conditioning import BY_NAME, target_band

        if not req.restart_ranges:
            return None
        bands = {name: target_band(name, v) for name, v in req.conditions.items() if not isinstance(v, list)}
        return {BY_NAME[name].column: band for name, band in bands.items() if band is not None}

    def _steerer(self, req: SampleRequest) -> Callable | None:
        """The sampler's ``steer(x̂_0, t, cond)`` of request ``req`` (None without steering): a step of
        :func:`molediff.steering.steer` below :data:`~molediff.steering.STEER_BELOW`, x̂_0 unchanged above."""
        if not req.steer:
            return None
        from molediff.steering import STEER_BELOW, steer

        model = self._property_model(req.property_model)

        def correct(x0: MolState, t: torch.Tensor, cond: torch.Tensor) -> MolState:
            return x0 if int(t.max()) >= STEER_BELOW else steer(x0, cond, model, req.steer)

        return correct

    @property
    def default_restarts(self) -> int:
        """Rounds of local restarts this model runs unless asked otherwise (:mod:`molediff.restarts`):
        its file's ``default_restarts``, else 0."""
        return int(self.meta.get("default_restarts", 0))

    def _restart_rounds(self, restarts: int | None, fragment: Any, flags: bool) -> int:
        """The request's restart rounds: ``restarts``, or the model's default (none with a fragment)."""
        from molediff.restarts import MAX_ROUNDS

        name = "--restarts" if flags else "restarts"
        # with a fragment, restarts need a fragment-conditioned model: inpainting imposes the fragment by
        # replacement, which a restart's own replacement would fight
        fits = self.writes_bonds and (fragment is None or bool(self.config.diffusion.fragments))
        if restarts is None:
            return self.default_restarts if fits else 0
        if not 0 <= restarts <= MAX_ROUNDS:
            raise UserError(f"{name} must be between 0 and {MAX_ROUNDS}, got {restarts}")
        if restarts and not self.writes_bonds:
            raise UserError(f"{name} needs a model that writes bonds (it regenerates the atoms that fail their valence "
                            "rule); this one writes atoms only")
        if restarts and not fits:
            raise UserError(f"{name} with a fragment needs a fragment-conditioned model (e.g. druglike, qm9-frag); this "
                            f"one grows fragments by inpainting: leave {name} out")
        return restarts

    @property
    def default_restart_rings(self) -> bool:
        """Whether this model's restarts redraw odd rings too unless asked otherwise (:mod:`molediff.restarts`):
        its file's ``restart_rings``, else False."""
        return bool(self.meta.get("restart_rings", False))

    def _restart_rings(self, rings: bool | None, restarts: int, flags: bool) -> bool:
        """The request's ring rule: ``rings``, or the model's default where restarts run."""
        if rings is None:
            return self.default_restart_rings and restarts > 0
        if rings and not restarts:
            self._refuse_without_restarts("--restart-rings" if flags else "restart_rings")
        return bool(rings)

    @property
    def default_restart_from(self) -> str:
        """What this model's restarts draw again unless asked otherwise (:data:`~molediff.config.RESTART_FROM`):
        its file's ``default_restart_from``, else the failing region."""
        return str(self.meta.get("default_restart_from", "region"))

    def _restart_from(self, restart_from: str | None, restarts: int, flags: bool) -> str:
        """The request's restart kind: ``restart_from``, or the model's default."""
        from molediff.config import RESTART_FROM

        name = "--restart-from" if flags else "restart_from"
        if restart_from is None:
            return self.default_restart_from
        if restart_from not in RESTART_FROM:
            raise UserError(f"{name} must be one of {', '.join(RESTART_FROM)}, got {restart_from!r}")
        if restart_from != self.default_restart_from and not restarts:
            self._refuse_without_restarts(name)
        return restart_from

    def _refuse_without_restarts(self, name: str) -> None:
        """A rule of local restarts asked (``name``, as the user wrote it) where none run: UserError."""
        raise UserError(f"{name} needs local restarts (--restarts R ≥ 1{'' if self.writes_bonds else ', a model that writes bonds'})")

    def _restart_ranges(self, ranges: bool | None, restarts: int, conditions: dict, flags: bool) -> bool:
        """The request's range rule (:mod:`molediff.restarts`): ``ranges``, or by default on wherever
        restarts run and a drug-like property is asked of every molecule, as a range or as a value (its
        band, :func:`molediff.conditioning.target_band`); QM9's properties are not computable from a
        molecule's graph."""
        from molediff.conditioning import DRUGLIKE_CONDITION_NAMES

        asked = any(not isinstance(v, list) for v in conditions.values())
        druglike = all(name in DRUGLIKE_CONDITION_NAMES for name in conditions)
        if ranges is None:
            return bool(conditions) and asked and druglike and restarts > 0
        if ranges:
            name = "--restart-ranges" if flags else "restart_ranges"
            if not restarts:
                self._refuse_without_restarts(name)
            if not conditions or not asked or not druglike:
                raise UserError(f"{name} redraws molecules outside the band of an asked drug-like property: "
                                "give one as --condition NAME=VALUE or NAME=LO:HI")
        return bool(ranges)

    def _size_range(self, n_atoms: int | str | tuple[int, int] | None) -> tuple[int, int] | None:
        """``n_atoms`` (a size, ``(lo, hi)`` or ``"lo-hi"``) as a checked range, None for the histogram."""
        if n_atoms is None:
            return None
        from molediff.inpainting import parse_size_range

        max_atoms = len(self.histogram) - 1
        lo, hi = parse_size_range(n_atoms) if isinstance(n_atoms, str) else (
            tuple(n_atoms) if isinstance(n_atoms, (tuple, list)) else (int(n_atoms), int(n_atoms)))
        if not 1 <= lo <= hi <= max(max_atoms, 1) * 2:
            raise UserError(f"--n-atoms must be between 1 and {max(max_atoms, 1) * 2} for this model, got {n_atoms}")
        return lo, hi

    def _prepared_fragment(self, fragment: Any) -> Any:
        """A fragment (an RDKit molecule with a 3D conformer, or a :class:`~molediff.inpainting.Fragment`)
        as this model reads it: checked against its vocabulary; a heavy-atom model's hydrogens become
        counts; an aromatic model's bonds aromatic where RDKit perceives them, as it was trained."""
        if fragment is None:
            return None
        if self.config.distill_method == "dmd" and self.config.diffusion.fragments:
            # its network reads the fixed-atom flag it inherited, but distribution matching only ever ran it on
            # whole molecules: how it grows a fragment was never trained nor measured
            teacher = self.meta.get("teacher") or self.config.distill_from
            raise UserError(f"this model ({self.source}) is a few-step student distilled on whole molecules; it does not "
                            f"grow fragments: grow them with its teacher ({teacher})")
        from molediff.inpainting import Fragment

        if not isinstance(fragment, Fragment):
            from molediff.chem.io import molecule_from_mol

            fragment = Fragment(*molecule_from_mol(fragment))
        fragment.check_vocabulary(self.diffusion.vocab, self.config.diffusion.charges)
        if self.diffusion.vocab.heavy_atom:  # its hydrogens become its atoms' counts; they are placed anew
            fragment = fragment.heavy()
        if self.diffusion.vocab.aromatic:
            from dataclasses import replace

            from molediff.chem.rdkit_mol import aromatic_bond_codes

            codes = aromatic_bond_codes(fragment.symbols, fragment.bonds, fragment.charges, fragment.hydrogens)
            fragment = replace(fragment, bonds=(*fragment.bonds[:2], codes))
        return fragment

    def request_tag(self, req: SampleRequest) -> str:
        """How a sample file names the request's sampler settings (SD property ``molediff_sampler``)."""
        tag = self.sampler_tag(req.sampler, req.steps, req.eta, req.noise_scale, req.spacing)
        if req.fragment is not None:
            tag += ("_fragment" if self.config.diffusion.fragments else "_inpaint") + f"_resample{req.resample}"
        tag += (f"_restarts{req.restarts}" + ("rings" if req.restart_rings else "") + ("ranges" if req.restart_ranges else "")
                + ("noise" if req.restart_from == "noise" else "")) if req.restarts else ""
        return tag + (f"_guidance{req.guidance:g}" if req.conditions else "")

    def sample_arrays(self, n: int, stats: SampleStats | None = None,
                      on_step: Callable[[int, int, int], None] | None = None, **kwargs: Any
                      ) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        """Yield ``n`` molecules as ``(symbols [k] str, positions [k, 3] Å, info)``; for models that write
        bonds, ``info["bonds"]`` = ``(src, dst, order)`` (local indices, Kekulé orders 1–3) and
        ``info["charges"]`` [k]. The request (``kwargs``) is checked first (:meth:`request`), then run
        (:meth:`run`); ``stats`` counts it, ``on_step(i, num_steps, batch_size)`` is called after every
        reverse step (progress that moves while a batch is sampled), the steps of local restart rounds
        included: those come after the batch's ``num_steps``, their number unknown in advance.

        ``steps`` (None: the model's default, :attr:`default_steps`), ``eta`` (DDIM's stochasticity; None: the
        model's, :attr:`default_eta`), ``seed``, ``batch_size``; ``first_batch``/``batch_stride`` select every
        stride-th batch index (for sharding across processes); the default is all batches. ``noise_scale``
        multiplies the noise injected at each reverse step: 1 samples the model's own distribution, 0.8 a
        lower-temperature one (more stable and valid molecules, somewhat fewer novel ones; see
        benchmarks/README.md); None: the model's :attr:`default_noise_scale` (0.8 unless its file names another).

        ``n_atoms``: a fixed size, or a range ``(lo, hi)`` / ``"lo-hi"`` drawn per molecule (default: the
        training histogram). ``fragment`` (a :class:`molediff.inpainting.Fragment` or an RDKit molecule
        with a 3D conformer): every molecule contains it (its atoms first, at its coordinates; sizes
        from the histogram above the fragment's size unless ``n_atoms``). A fragment-conditioned model
        (trained with ``--diffusion-fragments``, e.g. "qm9-frag") grows it directly; any other model by
        inpainting with ``resample`` RePaint rounds per step (default ``DEFAULT_RESAMPLE`` for those, else
        1); ``info["fixed_atoms"]`` lists the fragment's indices.

        ``conditions`` (conditional models, e.g. ``{"gap": 0.25, "alpha": 70}`` in the dataset's units,
        see :data:`molediff.conditioning.PROPERTIES`, or ``{"logp": Range(2, 3)}``): every molecule is
        generated for these targets (a range: each molecule's target drawn in it), its size drawn from
        p(n | targets) of the training data unless ``n_atoms``; properties not named are left free; a
        property may also take a sequence of ``n`` targets, one per molecule. ``guidance`` w:
        classifier-free guidance, u + w (c − u) (1: the conditional model as trained, 0: unconditional,
        > 1 stronger; two network passes per step). ``info["conditions"]`` holds each molecule's targets.
        ``self_condition_feedback``: which estimate a self-conditioning model reads back under guidance
        (:data:`molediff.molecular.SELF_CONDITION_FEEDBACK`). ``steer`` s > 0 with ``property_model`` (a file
        of :mod:`molediff.steering`; None: the one the model file carries): each molecule's x̂_0 of the late
        steps corrected towards its targets by a property model, step size s (0.1 measured on the drug-like
        model with restarts; tighter properties, a point or two of stability); None: the model's
        :attr:`default_steer`. ``restart_ranges`` (None: on where restarts run and a drug-like property is
        asked): restarts also redraw valid molecules whose property falls outside its asked range, or
        outside the band around its asked value (:attr:`molediff.conditioning.Property.tolerance`).
        ``restart_from`` (None: the model's :attr:`default_restart_from`): "region", restarts draw the
        failing atoms again with the rest of the graph held, or "noise", they draw the whole molecule again
        from noise (:data:`molediff.config.RESTART_FROM`).

        A heavy-atom model (one that generates hydrogen counts) yields complete molecules: its heavy
        atoms first, then exactly the generated number of hydrogens per atom, placed from the geometry
        (:func:`molediff.chem.hydrogens.place_hydrogens`; ``relax_hydrogens``: then MMFF94 on the
        hydrogens alone); ``info["hydrogens"]`` holds the generated counts of the heavy atoms.

        ``sampler`` ("ddim", "dpm++2m", "dpm++2m-sde", "dpm++3m", "ddpm") and ``spacing`` ("trailing",
        "logsnr", "finish"; None: the model's :attr:`default_spacing`): the reverse-process solver and its
        timestep grid (:func:`molediff.diffusion.sample`).
        """
        yield from self.run(self.request(n, **kwargs), stats, on_step)

    def run(self, req: SampleRequest, stats: SampleStats | None = None,
            on_step: Callable[[int, int, int], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
        """Sample a checked request (:meth:`request`) batch by batch: batch ``i`` from its own random stream
        (:func:`batch_generator`); a diverged molecule's target row is retried in the next batch, until
        ``req.n`` are delivered. Yields as :meth:`sample_arrays`."""
        if stats is None:
            stats = SampleStats()
        else:  # a reused one counts this request afresh (its delivered count decides when to stop)
            stats.__init__()
        stats.requested = req.n
        dcfg = self.config.diffusion
        # a range draws each molecule its target, from the run's own stream (same seed, same targets)
        targets = (condition_table(req.conditions, dcfg.conditions, req.n, generator=torch.Generator().manual_seed(req.seed + 7919))
                   if req.conditions else None)
        table = self.meta.get("condition_table") if req.conditions else None
        retry: list[int] = []  # molecule k gets target row k; a diverged molecule's row is retried in the next batch
        next_row = 0
        index = req.first_batch
        t0 = time.time()
        while stats.delivered < req.n:
            if stats.batches > 20 and stats.diverged > 10 * max(stats.delivered, 1):
                raise RuntimeError(f"sampling diverges: {stats.diverged} of {stats.diverged + stats.delivered} molecules failed")
            g = batch_generator(req.seed, index)
            size = min(req.batch_size, req.n - stats.delivered)
            rows, retry = retry[:size], retry[size:]
            fresh = size - len(rows)
            rows += range(next_row, next_row + fresh)
            next_row += fresh
            cond = targets[rows] if targets is not None else None
            if cond is not None and req.n_atoms is None:
                sizes = sizes_for_conditions(cond, torch.as_tensor(table["sizes"]), torch.as_tensor(table["values"]),
                                             dcfg.conditions, dcfg.condition_stats, generator=g)
            else:
                sizes = draw_sizes(self.histogram, size, req.n_atoms, len(req.fragment) if req.fragment is not None else 0, generator=g)
            mols = self._generate(req, sizes, cond, g, on_step, stats)
            ok = finite_molecules(mols.pos, mols.ptr)
            stats.diverged += int((~ok).sum())
            stats.batches += 1
            delivered = set()
            for i in np.flatnonzero(ok.numpy()).tolist():
                delivered.add(rows[i])
                stats.delivered += 1
                info = {"batch": index, "index_in_batch": i}
                if mols.restarted is not None:
                    info["restarts"] = int(mols.restarted[i])
                    stats.restarted += bool(info["restarts"])
                if req.fragment is not None:
                    info["fixed_atoms"] = list(range(len(req.fragment)))
                if targets is not None:
                    info["conditions"] = {name: float(targets[rows[i], k]) for k, name in enumerate(dcfg.conditions)
                                          if name in req.conditions}
                yield self._record(mols, i, info, req.relax_hydrogens)
            retry = [r for r in rows if r not in delivered] + retry
            index += req.batch_stride
            stats.seconds = time.time() - t0

    def _generate(self, req: SampleRequest, sizes: torch.Tensor, cond: torch.Tensor | None, g: torch.Generator,
                  on_step: Callable[[int, int, int], None] | None, stats: SampleStats) -> Any:
        """One batch of molecules of ``sizes`` [B] (``cond`` [B, K]: their targets), on the CPU; ``stats``
        counts its network evaluations."""
        total_steps = req.steps or self.diffusion.schedule.num_train_timesteps
        callback = (lambda i, t, x, k=len(sizes): on_step(i, total_steps, k)) if on_step is not None else None
        net = CountedNetwork(self._network(), stats)
        if req.fragment is None:
            return self.diffusion.sample(net, sizes, num_steps=req.steps, generator=g, eta=req.eta,
                                         noise_scale=req.noise_scale, callback=callback, resample=req.resample,
                                         cond=cond.to(self.device) if cond is not None else None, guidance=req.guidance,
                                         sampler=req.sampler, spacing=req.spacing,
                                         self_condition_feedback=req.self_condition_feedback, restarts=req.restarts,
                                         restart_rings=req.restart_rings, steer=self._steerer(req),
                                         restart_ranges=self._ranges(req), restart_from=req.restart_from).cpu()
        from molediff.inpainting import inpaint

        return inpaint(self.diffusion, net, req.fragment, sizes, req.steps, g, req.eta, req.noise_scale, req.resample,
                       callback, sampler=req.sampler, spacing=req.spacing, restarts=req.restarts,
                       restart_rings=req.restart_rings, restart_from=req.restart_from).cpu()

    def _record(self, mols: Any, i: int, info: dict, relax_hydrogens: bool) -> tuple[np.ndarray, np.ndarray, dict]:
        """Molecule ``i`` of a decoded batch as ``(symbols, positions, info)``: its own bonds and charges for
        a model that writes them, and a heavy-atom model's hydrogens placed (:meth:`sample_arrays`)."""
        a, b = int(mols.ptr[i]), int(mols.ptr[i + 1])
        symbols, xyz = np.array(ELEMENTS)[mols.atom_type[a:b].numpy()], mols.pos[a:b].double().numpy()
        if mols.bond_order is not None:
            p0, p1 = int(mols.pair_ptr[i]), int(mols.pair_ptr[i + 1])
            order = mols.bond_order[p0:p1]
            keep = order > 0
            src, dst = (mols.pair_index[:, p0:p1][:, keep] - a).numpy()
            info["bonds"] = (src, dst, order[keep].numpy())
            info["charges"] = mols.charge[a:b].numpy()
        if mols.hydrogens is not None:
            from molediff.chem.hydrogens import place_hydrogens

            info["hydrogens"] = mols.hydrogens[a:b].numpy()
            full = place_hydrogens(symbols, xyz, *info["bonds"], info["charges"], info["hydrogens"], relax=relax_hydrogens)
            symbols, xyz, info["bonds"], info["charges"] = np.array(full.symbols), full.pos, full.bonds, full.charges
        return symbols, xyz, info

    def sample(self, n: int, **kwargs) -> list:
        """``n`` molecules as RDKit ``Mol`` objects with 3D conformers: the model's own bonds and formal
        charges for models that write them (unsanitized, no implicit hydrogens), else lookup bonds."""
        from molediff.chem import build_molecule
        from molediff.chem.model_bonds import written_molecule

        out = []
        for s, p, info in self.sample_arrays(n, **kwargs):
            if "bonds" in info:
                out.append(written_molecule(list(s), *info["bonds"], info["charges"], p))
            else:
                out.append(build_molecule(list(s), p))
        return out


def load_pretrained(path: str | Path | None = None, device: str = "cpu", model: str = DEFAULT_MODEL) -> MoleculeGenerator:
    """A bundled model by name (``model``: "qm9-joint", the default, which writes its own bonds and formal
    charges; "qm9", atoms only; "qm9-cond", conditioned on properties; "qm9-frag", grows given
    fragments; "druglike", drug-like molecules from MOSES, heavy-atom with hydrogens placed;
    "druglike-cond", druglike conditioned on eight RDKit properties, with its own property model for
    steering), or the model file / training checkpoint at ``path``."""
    if path is None:
        path = bundled_model_path(model)
        if not path.exists():
            raise UserError(f"this installation has no bundled model {model!r}; pass --checkpoint PATH "
                            "(a run's ema_model.pt or checkpoint.pt)")
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    return MoleculeGenerator.from_file(path, device=device)
