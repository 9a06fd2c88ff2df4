"""Local restarts: generate again the atoms a sample got wrong, keeping the rest of its graph.

After the reverse process, a model that writes bonds may leave a molecule a few atoms short of valid:
an aromatic ring with no Kekulé form (a five-membered ring without its NH, an aromatic seven-ring), a
carbon one bond short, a stray fragment. A restart takes those atoms (:func:`restart_region`: the
atoms that fail the honest valence rule, those outside a molecule's largest fragment, and their
bonded neighbours up to two bonds away), noises the whole molecule back to level ``t0 = level · T``
and runs DDIM from there to 0 while the rest of its graph is held: after every step the other atoms'
types, charges and hydrogen counts and the bonds among them are overwritten with their own values,
forward-noised to that step's level (the replacement of RePaint, Lugmayr et al. 2022, as in
:mod:`molediff.inpainting`), so the network sees one consistent noisy molecule and redraws the
region's chemistry in its context. All positions are generated anew from t0, so the geometry fits the
new graph (holding the neighbours' positions as well left the regenerated molecules strained: median
MMFF94 relaxation drop 67 against 43 kcal/mol, 67 molecules). Only molecules that need it run again,
up to ``rounds`` times, each round checked the same way.

With ``rings`` (``molediff sample --restart-rings``, on by default for ``druglike``) the same restarts
also redraw the odd rings of molecules that pass the rule (non-aromatic rings with a double bond inside,
:func:`~molediff.chem.rdkit_mol.ring_kinds`: rare in drug-like data, the commonest flaw of a drug-like
model's samples) and their neighbours. Such a molecule was valid: where its new draw fails the rule,
it keeps the one before (tried again the next round), so the ring rule never costs validity. It moves
the sample towards the data on a figure the benchmarks report, so they give the rows without it too.

With ``ranges`` (``molediff sample --restart-ranges``, on by default where a range is asked and
restarts run) a molecule that passes the rule but whose property, measured by RDKit on its written
graph, falls outside an asked range (``--condition logp=2:3``) is redrawn whole from ``t0`` under its
conditions (and steering, where asked), with the same keep-the-valid-one rule as for rings. The asked
range is a hard request the model meets only on average; this is a check on each molecule, the way a
chemist filters, at a fraction of a new sample's cost. Benchmarks give the rows without it too.

With ``restart_from="noise"`` (``molediff sample --restart-from noise``) a molecule with a region is drawn
again whole from the grid's first level instead, a fresh draw of its size (a fragment's atoms excepted): for a
few-step student, whose failures (a molecule in two pieces) are a layout decided in its first steps that no
region redraw at level 0.4 undoes. Each round then costs a full sample of the molecules that fail; the
benchmarks count the evaluations per molecule. On a "finish" grid (a student's coarse steps, then finishing
steps at low noise) the molecules are first judged where the coarse steps end, for pieces only, and those in
pieces are drawn again through the coarse steps alone (:func:`restart_before_finishing`, up to ``rounds``
times); the finished molecules are then judged as above, with up to ``rounds`` rounds of their own.

Nothing is repaired by rule: a regenerated region is the model's new draw, judged by the same honest
rule afterwards, and a molecule still failing after the last round is written as it is. The figures
with and without restarts are in benchmarks/README.md ("local restarts").
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from molediff.config import DEFAULT_RESTART_LEVEL as DEFAULT_LEVEL
from molediff.config import RESTART_FROM
from molediff.state import MolState

#: bonded neighbours of a failing atom that are redrawn with it (two hops also free the ring around a
#: failing atom of a substituent)
DEFAULT_HOPS = 2
#: at most this many rounds (each costs at most the ``level`` share of a run, on the failing molecules)
MAX_ROUNDS = 20


def restart_eta(sampler: str, eta: float) -> float:
    """DDIM's η for restarts under ``sampler`` (:data:`~molediff.diffusion.sampler_table.SAMPLER_TABLE`):
    a request's own η under ddim, 1 under the other samplers that inject noise, 0 under deterministic ones."""
    from molediff.diffusion.sampler_table import SAMPLER_TABLE

    if sampler == "ddim":
        return eta
    return 1.0 if SAMPLER_TABLE[sampler].injects_noise(eta) else 0.0


def restart_region(diffusion, x: MolState, hops: int = DEFAULT_HOPS, rings: bool = False,
                   ranges: dict[str, tuple[float, float]] | None = None) -> torch.Tensor:
    """``[|V|]`` bool: the atoms of the clean state ``x`` to generate again (see the module docstring);
    all False for a molecule that is stable and connected (and, with ``rings``, has no odd ring). A
    fragment (``x.graph.fixed``) is never in it; where a fragment atom fails, every other atom of its
    molecule is. ``ranges`` ({descriptor: (lo, hi)}, :data:`~molediff.chem.analysis.CONDITION_DESCRIPTORS`
    keys): a molecule that passes the rule with a property outside its range has every atom but a
    fragment's in it."""
    return _regions(diffusion, x, hops, rings, ranges)[0]


def honest_check(diffusion, x: MolState) -> tuple[tuple, np.ndarray, np.ndarray]:
    """The honest rule on the clean state ``x``, decoded: ``(args, failing, valid)``, with ``args`` the
    decoded graph as :func:`~molediff.chem.model_bonds.failing_atoms` reads it (atom types, charges, ptr,
    bonded pairs' src and dst, their orders, hydrogens or None), ``failing`` its ``[|V|]`` bool result and
    ``valid`` ``[B]`` bool, the molecules none of whose atoms fail (stable and connected)."""
    from molediff.chem.model_bonds import failing_atoms

    args = _decoded_graph(diffusion, x)
    failing = failing_atoms(*args)
    valid = ~np.bincount(x.graph.batch.cpu().numpy(), weights=failing, minlength=x.num_graphs).astype(bool)
    return args, failing, valid


def _decoded_graph(diffusion, x: MolState) -> tuple:
    """The clean state ``x`` decoded, as :func:`~molediff.chem.model_bonds.failing_atoms` reads it: (atom types,
    charges, ptr, bonded pairs' src and dst, their orders, hydrogens or None), numpy arrays."""
    mols = diffusion.decode(x).cpu()
    bonded = mols.bond_order > 0
    src, dst = mols.pair_index[:, bonded].numpy()
    return (mols.atom_type.numpy(), mols.charge.numpy(), mols.ptr.numpy(), src, dst, mols.bond_order[bonded].numpy(),
            None if mols.hydrogens is None else mols.hydrogens.numpy())


def _regions(diffusion, x: MolState, hops: int, rings: bool, ranges: dict[str, tuple[float, float]] | None = None,
             whole: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`restart_region`'s ``[|V|]`` mask, ``[B]`` bool: the molecules that pass the honest rule,
    stable and connected, whatever their rings). ``whole``: the mask holds every atom of a molecule it
    touches (a fragment's excepted)."""
    from molediff.chem.model_bonds import odd_ring_atom_mask

    args, failing, valid = honest_check(diffusion, x)
    src, dst = args[3], args[4]
    batch = x.graph.batch.cpu().numpy()
    fixed = None if x.graph.fixed is None else x.graph.fixed.cpu().numpy()
    free = failing.copy()
    if rings:  # odd rings of the molecules that pass; a ring wholly inside a given fragment stays as given
        odd = odd_ring_atom_mask(*args, molecules=valid)
        free |= odd if fixed is None else odd & ~fixed
    for _ in range(hops):
        grown = free.copy()
        grown[dst[free[src]]] = True
        grown[src[free[dst]]] = True
        free = grown
    if ranges:  # a property outside its asked range: the whole molecule is drawn again
        from molediff.chem.analysis import outside_ranges

        free |= outside_ranges(*args, ranges=ranges, molecules=valid)[batch]
    if fixed is not None:
        # a fragment's atoms never change; one that fails (an open valence nothing was bonded to) has
        # every generated atom of its molecule drawn again instead
        stuck = np.zeros(x.num_graphs, dtype=bool)
        stuck[batch[failing & fixed]] = True
        free = (free | stuck[batch]) & ~fixed
    if whole:
        touched = np.zeros(x.num_graphs, dtype=bool)
        touched[batch[free]] = True
        free = touched[batch] if fixed is None else touched[batch] & ~fixed
    return torch.as_tensor(free, device=x.device), torch.as_tensor(valid)


@torch.no_grad()
def restart_failed(diffusion, x: MolState, denoiser: Callable[[torch.Tensor, MolState | None], Callable], rounds: int,
                   num_steps: int, eta: float, noise_scale: float, generator: torch.Generator | None = None,
                   level: float = DEFAULT_LEVEL, hops: int = DEFAULT_HOPS, spacing: str = "trailing",
                   callback: Callable[[int, int, MolState], None] | None = None, rings: bool = False,
                   ranges: dict[str, tuple[float, float]] | None = None,
                   restart_from: str = "region") -> tuple[MolState, torch.Tensor]:
    """Restart the failing regions of the clean state ``x`` (the sampler's output, before decoding) up
    to ``rounds`` times. ``denoiser(molecules, known)`` gives the sampler's ``model(x_t, t)`` for those
    molecules ([K] indices into ``x``: their conditions), holding ``known`` (their fragment's clean rows,
    None without one); DDIM with ``num_steps`` / ``eta`` / ``noise_scale`` / ``spacing`` runs from the
    grid's first level ≤ ``level`` · T. A fragment (``x.graph.fixed``, a fragment-conditioned model's)
    is never part of a region and stays clean, positions included, as in the model's training.

    ``callback(i, t, y)`` is called after every step of every round (the sampler's, so progress moves).
    ``rings``: odd rings (:func:`~molediff.chem.rdkit_mol.ring_kinds`) of molecules that pass the honest
    rule are redrawn too, with the same hops; a round never leaves such a molecule invalid (where its new
    draw fails the rule, it keeps the one before, and its ring may be tried again the next round).
    ``ranges`` ({descriptor: (lo, hi)}): molecules that pass the rule with a property outside its range,
    measured by RDKit, are redrawn whole, kept like an odd ring's where the new draw fails the rule.
    ``restart_from`` "noise" (:data:`~molediff.config.RESTART_FROM`): every molecule with a region is drawn
    again whole (a fragment's atoms excepted) from the grid's first level, noise, whatever ``level``.

    Returns ``(state, restarted)``: the new clean state and ``[B]`` int, the rounds each molecule was
    regenerated (0: it was not)."""
    from molediff.diffusion.samplers import ddim_sample

    if restart_from not in RESTART_FROM:
        raise ValueError(f"restart_from must be one of {RESTART_FROM}, got {restart_from!r}")
    s = diffusion.schedule
    whole = restart_from == "noise"
    start = s.num_train_timesteps - 1 if whole else int(round(level * (s.num_train_timesteps - 1)))
    grid = s.set_timesteps(num_steps, spacing=spacing).tolist()
    # the grid's level t0; a grid too coarse to have one below the level (2 steps: 999, 499) restarts from its last
    first = next((t for t in grid if t <= start), grid[-1])
    restarted = torch.zeros(x.num_graphs, dtype=torch.long)
    free, valid = _regions(diffusion, x, hops, rings, ranges, whole)
    for _ in range(rounds):
        if not bool(free.any()):
            break
        molecules = torch.unique(x.graph.batch[free]).cpu()
        restarted[molecules] += 1
        graph, atom_rows, pair_rows = x.graph.select(molecules)  # keeps a fragment's marks
        known = MolState(x.node[atom_rows], x.pair[pair_rows], graph, x.parts)
        fragment = known if graph.fixed is not None else None
        marked = graph.with_fixed(~free[atom_rows])
        held, held_pairs = marked.fixed, marked.fixed_pairs

        def noised(t: int) -> MolState:
            z = known.noise_like(generator)
            y = MolState(s.add_noise(known.node, z.node, t), s.add_noise(known.pair, z.pair, t), graph, x.parts)
            return y if fragment is None else y.hold(fragment)

        def replace(i: int, t: int, y: MolState) -> MolState:  # noqa: ARG001
            # the held atoms' types, charges and hydrogens and the bonds among them; every position is the
            # chain's own (holding the neighbours' positions too left the regenerated molecules strained)
            # but a fragment's, which stays clean
            target = known if t < 0 else noised(t)
            node, pair = y.node.clone(), y.pair.clone()
            node[held, 3:] = target.node[held, 3:]
            pair[held_pairs] = target.pair[held_pairs]
            y = MolState(node, pair, graph, x.parts)
            return y if fragment is None else y.hold(fragment)

        y = noised(first)  # every free atom at level t0; the held ones are replaced after each step
        y = ddim_sample(denoiser(molecules, fragment), y, s, num_steps=num_steps, eta=eta, generator=generator,
                        spacing=spacing, noise_scale=noise_scale, replace=replace, start=first, callback=callback)
        node, pair = x.node.clone(), x.pair.clone()
        node[atom_rows], pair[pair_rows] = y.node, y.pair
        new = MolState(node, pair, x.graph, x.parts)
        # only the redrawn molecules are judged again (the others are unchanged): RDKit's work per round
        # follows the molecules restarted, not the batch
        y_free, y_valid = _regions(diffusion, MolState(y.node, y.pair, graph, x.parts), hops, rings, ranges, whole)
        new_free, new_valid = free.clone(), valid.clone()
        new_free[atom_rows], new_valid[molecules] = y_free.to(free.device), y_valid
        broke = valid & ~new_valid  # valid before, redrawn for an odd ring or a range, invalid now: it keeps what it was
        if bool(broke.any()):
            atoms, pairs = broke.to(x.device)[x.graph.batch], broke.to(x.device)[x.graph.pair_batch]
            node[atoms], pair[pairs] = x.node[atoms], x.pair[pairs]
            new = MolState(node, pair, x.graph, x.parts)
            new_free[atoms], new_valid[broke] = free[atoms], True
        x, free, valid = new, new_free, new_valid
    return x, restarted


def finishing_level(schedule, num_steps: int, spacing: str) -> int | None:
    """The first finishing level of a "finish" grid (:data:`~molediff.diffusion.sampler_table.FINISH_GRIDS`) of
    ``num_steps`` steps, where its coarse steps end; None for other grids."""
    from molediff.diffusion.sampler_table import FINISH_GRIDS

    if spacing not in FINISH_GRIDS:
        return None
    return int(schedule.set_timesteps(num_steps, spacing=spacing).tolist()[-len(FINISH_GRIDS[spacing])])


def _assign(x: MolState, atom_rows: torch.Tensor, pair_rows: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor]) -> MolState:
    """``x`` with the rows of some of its molecules (``atom_rows``, ``pair_rows``) set to ``rows`` (node, pair)."""
    node, pair = x.node.clone(), x.pair.clone()
    node[atom_rows], pair[pair_rows] = rows
    return MolState(node, pair, x.graph, x.parts)


def split_molecules(diffusion, x: MolState) -> torch.Tensor:
    """``[B]`` bool: the molecules of the clean state ``x``, decoded, that their own bonds leave in pieces."""
    from molediff.chem.model_bonds import split_molecules as split

    args = _decoded_graph(diffusion, x)
    return torch.as_tensor(split(args[2], args[3], args[4], args[5]))


@torch.no_grad()
def restart_before_finishing(diffusion, x_T: MolState, denoiser: Callable, rounds: int, num_steps: int, eta: float,
                             noise_scale: float, generator: torch.Generator | None = None, spacing: str = "finish",
                             callback: Callable[[int, int, MolState], None] | None = None
                             ) -> tuple[MolState, dict[str, MolState], torch.Tensor]:
    """Restarts from noise decided where a "finish" grid's coarse steps end (:func:`finishing_level`), so a
    molecule drawn again costs its coarse steps only. A few-step student's failures are mostly a layout its
    coarse steps settle, a molecule in two pieces, which its finishing steps never join; they do mend most
    valences. So its x̂_0 after the last coarse step is judged for pieces only (:func:`split_molecules`:
    ``qm9-fast``, 300 molecules, the 67 split there were the 67 split at the end, and 227 of the other 233
    passed the honest rule at the end, against 196 that passed it at that step), and the molecules in pieces
    are drawn again from noise to that level, up to ``rounds`` times. The finished molecules are then judged
    by the honest rule as usual (:func:`restart_failed`).

    ``x_T`` the prior; ``denoiser(molecules, None)`` the sampler's model for those molecules (``[K]`` indices:
    their conditions), with an ``estimate`` attribute (:func:`~molediff.guidance.sampling_denoiser`); DDIM
    with ``num_steps`` / ``eta`` / ``noise_scale`` / ``spacing``. Returns the state at the finishing level,
    the self-conditioning estimate to start the finishing steps with (per molecule, that of its own chain)
    and ``[B]`` int, the rounds each molecule was drawn again."""
    from molediff.diffusion.samplers import ddim_sample

    s = diffusion.schedule
    level = finishing_level(s, num_steps, spacing)
    if level is None:
        raise ValueError(f"restarts before the finishing steps need a finish grid, got spacing {spacing!r}")

    def coarse(y: MolState, molecules: torch.Tensor) -> tuple[MolState, MolState, dict[str, MolState]]:
        model = denoiser(molecules, None)
        last = {}

        def judged(z: MolState, t: torch.Tensor, **kw) -> MolState:  # keeps the step's x̂_0, the one judged
            last["x0"] = model(z, t, **kw)
            return last["x0"]

        y = ddim_sample(judged, y, s, num_steps=num_steps, eta=eta, generator=generator, spacing=spacing,
                        noise_scale=noise_scale, end=level, callback=callback)
        return y, last["x0"], model.estimate

    x, x0, estimate = coarse(x_T, torch.arange(x_T.num_graphs))
    restarted = torch.zeros(x.num_graphs, dtype=torch.long)
    split = split_molecules(diffusion, x0)
    for _ in range(rounds):
        if not bool(split.any()):
            break
        molecules = torch.nonzero(split).squeeze(1)
        restarted[molecules] += 1
        graph, atom_rows, pair_rows = x.graph.select(molecules)
        y, y0, y_estimate = coarse(diffusion.prior(graph, generator), molecules)
        x = _assign(x, atom_rows, pair_rows, (y.node, y.pair))
        estimate = {k: _assign(v, atom_rows, pair_rows, (y_estimate[k].node, y_estimate[k].pair)) for k, v in estimate.items()}
        split = split.clone()
        split[molecules] = split_molecules(diffusion, y0)
    return x, estimate, restarted
