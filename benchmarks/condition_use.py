"""Does a conditional model read its conditions? Validation loss with the conditions given against hidden.

A cheap signal for a conditional fine-tune's learning curve, before its 1,000-molecule target rows
(``benchmarks/druglike_conditioning.py``, ``benchmarks/property_conditioning.py``): the model's
training loss on held-out molecules (the run's own validation split, fixed noise and timesteps) when
every property of each molecule is given, when none is, and when one property alone is. A model that
has learnt to use a property denoises better when it is told it, most at high noise, where the
molecule is still undecided; a gap near zero means the property is read weakly or not at all. The
gap is shown per part of the loss (``mse``: positions and atom types together; the categorical parts), by
band of timesteps, and the ε-MSE split into positions and atom types (without a self-conditioning estimate).

    python benchmarks/condition_use.py --checkpoint RUN/ema_model.pt --molecules 400
    python benchmarks/condition_use.py --checkpoint M.pt --data DIR     # a model file away from its run's data

Writes ``benchmarks/results/condition_use.json`` (``--json``; rows merge by label).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from molediff.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
BANDS = ((0, 300), (300, 700), (700, 1000))


def validation_molecules(config, n: int):
    """The first ``n`` molecules of the run's validation split, prepared as its training reads them."""
    from molediff.conditioning import condition_family
    from molediff.data.files import with_condition_properties
    from molediff.training import load_training_data

    _, valid = load_training_data(config, progress=False)
    valid = valid.subset(torch.arange(min(n, len(valid))))
    if condition_family(config.diffusion.conditions) == "druglike":
        valid = with_condition_properties(valid, config.diffusion.conditions)
    if config.diffusion.bonds:
        valid = valid.subset(valid.has_bonds)
    if config.diffusion.max_hydrogens:
        valid, _ = valid.heavy_atoms()
    return valid


def shown(values: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``values`` [B, K] with the columns not in ``keep`` (bool [K]; None: none kept) set to NaN, "not given"."""
    mask = torch.zeros(values.shape[1], dtype=torch.bool) if keep is None else keep
    return torch.where(mask.to(values.device)[None, :], values, torch.full_like(values, float("nan")))


def band_losses(diffusion, net, data, band: tuple[int, int], keep: torch.Tensor | None, seed: int) -> dict[str, float]:
    """Validation losses with timesteps drawn in ``band`` and conditions masked to the columns ``keep``
    (bool [K]; None: all hidden)."""
    from molediff.training import validation_loss

    lo, hi = band
    base_values = diffusion.condition_values

    diffusion.condition_values = lambda batch: shown(base_values(batch), keep)
    diffusion.sample_timesteps = lambda n, generator=None, device=None: torch.randint(lo, hi, (n,), generator=generator, device=device)
    try:
        with torch.no_grad():
            return validation_loss(diffusion, net, data, batch_size=200, seed=seed)
    finally:
        del diffusion.condition_values, diffusion.sample_timesteps  # back to the class's methods


def eps_errors(diffusion, net, data, band: tuple[int, int], keep: torch.Tensor | None, seed: int,
               batch_size: int = 200) -> dict[str, float]:
    """The ε-MSE of each part the training loss scores that way (positions, and atom types unless they are
    trained by cross-entropy), split, per molecule then averaged: which part a condition helps. No
    self-conditioning estimate; timesteps in ``band``, noise fixed by ``seed``; conditions as in
    :func:`band_losses`."""
    g = torch.Generator().manual_seed(seed)
    names = [p.name for p in diffusion.parts if p.loss == "mse"]
    sums = dict.fromkeys(names, 0.0)
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        batch = data.collate(idx)
        x0 = diffusion.encode(batch)
        t = torch.randint(band[0], band[1], (len(idx),), generator=g)
        noise = x0.noise_like(g)
        cond = shown(diffusion.condition_values(batch), keep)
        x_t = diffusion.add_noise(x0, noise, t)
        with torch.no_grad():
            out = diffusion.predict(net, x_t, t, cond=cond)[0]
        eps = diffusion.schedule.to_eps(out.node, x_t.node, t[x0.graph.batch])
        counts = torch.bincount(x0.graph.batch, minlength=len(idx)).clamp_min(1)
        for name in names:
            cols = diffusion.node_cols[name]
            err = ((eps[:, cols] - noise.node[:, cols]) ** 2).mean(1)
            per_mol = torch.zeros(len(idx), dtype=err.dtype).index_add_(0, x0.graph.batch, err) / counts
            sums[name] += float(per_mol.sum())
    return {name: v / max(len(data), 1) for name, v in sums.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a conditional model file or training checkpoint")
    p.add_argument("--data", default=None, help="the training data (default: the model's config's, as its run read it)")
    p.add_argument("--molecules", type=int, default=400, help="validation molecules (default 400)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default=None)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "condition_use.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from molediff.checkpoint import load_model_file
    from molediff.models import build_network
    from molediff.molecular import MolecularDiffusion

    weights, config, meta = load_model_file(args.checkpoint)
    names = list(config.diffusion.conditions)
    if not names:
        raise SystemExit(f"{args.checkpoint} is not a conditional model")
    if args.data:
        config.data = args.data
    diffusion = MolecularDiffusion(config.diffusion)
    net = build_network(config.model, diffusion)
    net.load_state_dict(weights)
    net.eval()
    data = validation_molecules(config, args.molecules)
    label = args.label or f"{args.checkpoint} step {meta.get('step')}"
    print(f"{label}: {len(data)} validation molecules; loss with conditions hidden → given (gap)", flush=True)
    rows, start = [], time.perf_counter()
    for band in BANDS:
        none = band_losses(diffusion, net, data, band, None, args.seed)
        every = band_losses(diffusion, net, data, band, torch.ones(len(names), dtype=torch.bool), args.seed)
        row = {"label": label, "t": list(band), "hidden": none, "given": every, "one": {}}
        for k, name in enumerate(names):
            keep = torch.zeros(len(names), dtype=torch.bool)
            keep[k] = True
            row["one"][name] = band_losses(diffusion, net, data, band, keep, args.seed)["total"]
        split_none = eps_errors(diffusion, net, data, band, None, args.seed)
        split_every = eps_errors(diffusion, net, data, band, torch.ones(len(names), dtype=torch.bool), args.seed)
        row["eps_mse_by_part"] = {"hidden": split_none, "given": split_every}
        rows.append(row)
        split = "  ".join(f"{k} {split_none[k]:.4f}→{split_every[k]:.4f}" for k in split_none)
        print(f"    ε-MSE by part (no self-conditioning): {split}", flush=True)
        parts = "  ".join(f"{k} {none[k]:.4f}→{every[k]:.4f}" for k in none if k != "total" and none[k] > 0)
        one = "  ".join(f"{n} {none['total'] - v:+.4f}" for n, v in row["one"].items())
        print(f"  t {band[0]}-{band[1]}: total {none['total']:.4f} → {every['total']:.4f} ({none['total'] - every['total']:+.4f});"
              f" {parts}\n    one property alone, gain: {one}", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")
    path = Path(args.json)
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    old["rows"] = [r for r in old["rows"] if r["label"] != label] + rows
    atomic_write(path, json.dumps(old, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
