"""What a molecular sampling run wraps around the denoiser call: classifier-free guidance
(:func:`guided`), the self-conditioning estimate fed back from step to step
(:data:`SELF_CONDITION_FEEDBACK`), and a fragment-conditioned model's fragment held in every state the
network sees and after every step (:func:`hold_fragment`). :func:`sampling_denoiser` puts them
together into the sampler's ``model(x_t, t, **kw)``; :meth:`molediff.molecular.MolecularDiffusion.sample`
runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from molediff.state import MolState

if TYPE_CHECKING:
    from molediff.models.denoiser import Denoiser
    from molediff.molecular import MolecularDiffusion

__all__ = ["SELF_CONDITION_FEEDBACK", "guided", "hold_fragment", "sampling_denoiser"]

#: what a self-conditioning model reads as its previous estimate when sampling under guidance w ∉ {0, 1}:
#: "guided" the guided combination u + w (c − u) (a state training never shows the network),
#: "conditional" the conditional branch's own estimate c, "per-branch" each branch its own previous
#: estimate (the conditional pass reads c, the unconditional one u: what training shows each)
SELF_CONDITION_FEEDBACK = ("guided", "conditional", "per-branch")


def guided(denoise: Callable[[torch.Tensor | None], MolState], cond: torch.Tensor | None, w: float) -> MolState:
    """Classifier-free guidance (Ho & Salimans 2022) around a denoiser call ``denoise(cond)``:
    u + w (c − u) of the unconditional (u = ``denoise(None)``) and conditional (c = ``denoise(cond)``)
    predictions. w = 0 is u itself and w = 1 is c itself (one pass each); otherwise two passes.
    Without ``cond``, the plain prediction."""
    if cond is None or w == 0.0:
        return denoise(None)
    c = denoise(cond)
    if w == 1.0:
        return c
    u = denoise(None)
    return u + w * (c - u)


def hold_fragment(known: MolState | None, x_T: MolState, replace: Callable | None, fragments: bool
                  ) -> tuple[MolState, Callable | None]:
    """A fragment-conditioned model's fragment held in the sampler: ``x_T`` with the fragment's clean
    rows (:meth:`MolState.hold`, by the graph's ``fixed`` mask), and the ``replace`` hook that holds them
    after every step. Without ``known``: ``x_T`` and ``replace`` unchanged. ``fragments``: whether the
    model was trained on fragments (else ``known`` is refused)."""
    if known is None:
        return x_T, replace
    if replace is not None:
        raise ValueError("give known (a fragment-conditioned model's fragment) or replace (inpainting), not both")
    if not fragments:
        raise ValueError("known is for fragment-conditioned models (trained with --diffusion-fragments)")
    if known.graph.fixed is None or x_T.graph.fixed is None or not torch.equal(known.graph.fixed, x_T.graph.fixed):
        raise ValueError("known and x_T must be on one graph whose fixed mask marks the fragment")

    def hold(i: int, t: int, x: MolState) -> MolState:  # noqa: ARG001
        return x.hold(known)

    return x_T.hold(known), hold


def sampling_denoiser(diffusion: MolecularDiffusion, net: Denoiser, cond: torch.Tensor | None, guidance: float,
                      known: MolState | None, feedback: str = "guided",
                      steer: Callable[[MolState, torch.Tensor, torch.Tensor], MolState] | None = None,
                      estimate: dict[str, MolState] | None = None) -> Callable[..., MolState]:
    """The sampler's ``model(x_t, t, **kw)``: the network's prediction (:meth:`MolecularDiffusion.predict`)
    under guidance, on a state that shows the network the clean fragment (RePaint rounds included), fed
    the previous step's estimate (self-conditioning models; ``feedback``: which one under guidance,
    :data:`SELF_CONDITION_FEEDBACK`). ``steer(x̂_0, t, cond)``: a correction of the guided x̂_0 towards the
    targets ``cond`` (:mod:`molediff.steering`), applied where ``cond`` is given; the corrected x̂_0 is
    what the step uses and what is fed back.

    The returned model's ``estimate`` attribute is that fed-back estimate (a dict by branch), so a chain run in
    two parts can hand it on: ``estimate`` starts the second part's model with the first part's."""
    if feedback not in SELF_CONDITION_FEEDBACK:
        raise ValueError(f"self-conditioning feedback must be one of {', '.join(SELF_CONDITION_FEEDBACK)}, got {feedback!r}")
    # self-conditioning: the previous step's x̂_0 per branch ("u" unconditional, "c" conditional;
    # "fed" is what every branch reads unless the feedback is per branch)
    estimate = dict(estimate or {})

    def model(x: MolState, t: torch.Tensor, **kw: Any) -> MolState:
        if known is not None:
            x = x.hold(known)
        branches: dict[str, MolState] = {}

        def branch(c: torch.Tensor | None) -> MolState:
            key = "u" if c is None else "c"
            sc = estimate.get(key if feedback == "per-branch" else "fed")
            branches[key] = diffusion.predict(net, x, t, self_cond=sc, cond=c, **kw)[0]
            return branches[key]

        out = guided(branch, cond, guidance)
        if steer is not None and cond is not None:
            out = steer(out, t, cond)
            if guidance == 1.0:  # the one (conditional) branch is the output: its feedback is the steered one too
                branches = {k: out for k in branches}
        if diffusion.cfg.self_condition:
            if feedback == "per-branch":
                estimate.update(branches)
            else:  # w = 0 has no conditional branch: its estimate is the unconditional one (= out)
                estimate["fed"] = branches.get("c", out) if feedback == "conditional" else out
        return out

    model.estimate = estimate
    return model
