"""Per-molecule read-outs of a molecular state: a small EGNN over a state's parts, pooled per molecule.

The reader: the property model that steers sampling towards property targets (:mod:`molediff.steering`: an
x̂_0 → standardised properties). :func:`pool_per_molecule` also pools the features distribution matching's
discriminator reads (:class:`molediff.distill.Discriminator`).
"""

from __future__ import annotations

import torch
from torch import nn

from molediff.models.egnn import EGNNDenoiser

__all__ = ["MoleculeReadout", "pool_per_molecule"]


class MoleculeReadout(nn.Module):
    """``(h, pos, graph, pair, extra)`` → ``[B, out]``: invariant to rotations, reflections, translations and
    atom order.

    The EGNN reads, per atom, a state's features ``h`` [|V|, node_in] and, per pair, its pair state ``pair``
    [|P|, pair_in] (models with bonds), each with ``extra`` [B, E] per-molecule inputs appended (e.g. a noise
    level); ``pos`` [|V|, 3] (Å) is the geometry. Its atom and pair outputs are pooled per molecule (sum / 10 and mean) into a
    two-layer head.

    Args:
        node_in: the state's per-atom feature width (``node_width − 3``). pair_in: its pair width (0: none).
        out: outputs per molecule. extra: width E of the per-molecule inputs. hidden, layers: the EGNN's.
    """

    def __init__(self, node_in: int, pair_in: int, out: int, extra: int = 0, hidden: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.extra = extra
        self.pairs = pair_in > 0
        pair = {"pair_in": pair_in + extra, "pair_out": hidden, "pair_hidden": 32} if self.pairs else {}
        # messages are summed over a molecule's atoms: Z ~ a typical atom count keeps their scale
        self.net = EGNNDenoiser(node_in + extra, hidden, hidden=hidden, layers=layers, norm=16.0, **pair)
        self.head = nn.Sequential(nn.Linear((4 if self.pairs else 2) * hidden, hidden), nn.SiLU(), nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor, pos: torch.Tensor, graph, pair: torch.Tensor | None = None,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        g = graph
        pair = pair if self.pairs else None
        if self.extra:
            h = torch.cat([h, extra[g.batch]], dim=1)
            if pair is not None:
                pair = torch.cat([pair, extra[g.pair_batch]], dim=1)
        _, h_out, pair_out = self.net(h, pos, g, pair=pair)
        pooled = [pool_per_molecule(h_out, g.batch, g.num_graphs)]
        if self.pairs:
            pooled.append(pool_per_molecule(pair_out, g.pair_batch, g.num_graphs))
        return self.head(torch.cat(pooled, dim=1))


def pool_per_molecule(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Per group of ``index``: the sum / 10 and the mean of ``values`` [R, C] → [n, 2C]."""
    total = values.new_zeros(n, values.shape[1]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=n).clamp_min(1).to(values.dtype)[:, None]
    return torch.cat([total / 10.0, total / count], dim=1)
