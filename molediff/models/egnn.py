"""E(n)-equivariant graph network (Satorras et al. 2021; the EGNN of EDM, Hoogeboom et al. 2022).

Each layer, on the fully connected graph of each molecule:

    m_ij = φ_e(h_i, h_j, f(d_ij), f(d⁰_ij)) · sigmoid(φ_a(m_ij))      messages (invariant)
    h_i ← h_i + φ_h(h_i, Σ_j m_ij / Z)                                  feature update (invariant)
    x_i ← x_i + Σ_j (x_i − x_j) / (d_ij + 1) · φ_x(m_ij) / Z            position update (equivariant)

with f the squared distance (EDM) or a radial basis expansion, d⁰ the distances of the input
geometry and Z a constant normalisation. Speed on CPU: the first linear layer of φ_e is split into
per-node projections ``W_s h_i + W_t h_j`` (computed |V| times, not |E| times), edge index
templates are cached per molecule size, and there is no padding.

Shapes: |V| atoms in the batch, |E| = Σ n(n−1) directed edges, F input features, H hidden width.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FullyConnectedEdges:
    """Directed edges (i ≠ j) within each molecule of a batch, with per-size templates cached."""

    def __init__(self) -> None:
        self._templates: dict[int, torch.Tensor] = {}

    def _template(self, n: int) -> torch.Tensor:
        if n not in self._templates:
            idx = torch.arange(n)
            row, col = idx.repeat_interleave(n), idx.repeat(n)
            keep = row != col
            self._templates[n] = torch.stack([row[keep], col[keep]])
        return self._templates[n]

    def __call__(self, ptr: torch.Tensor) -> torch.Tensor:
        """``ptr`` [B + 1] atom offsets → ``edge_index`` [2, |E|] (row = receiver i, col = sender j)."""
        counts = (ptr[1:] - ptr[:-1]).tolist()
        starts = ptr[:-1].tolist()
        parts = [self._template(n) + s for n, s in zip(counts, starts) if n > 1]
        if not parts:
            return torch.zeros(2, 0, dtype=torch.long, device=ptr.device)
        return torch.cat(parts, dim=1).to(ptr.device)


class RadialBasis(nn.Module):
    """Gaussian radial basis of a distance d (Å): exp(−γ (d − μ_k)²) for K centres in [0, cutoff]."""

    def __init__(self, num_basis: int = 16, cutoff: float = 8.0) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, cutoff, num_basis))
        self.gamma = (num_basis / cutoff) ** 2 / 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """``d`` [|E|, 1] → [|E|, K]."""
        return torch.exp(-self.gamma * (d - self.centres) ** 2)


class EGNNLayer(nn.Module):
    """One EGNN layer. See the module docstring for the update rule.

    Args:
        hidden: H, the width of h and of messages.
        edge_in: width of the invariant edge features f(d_ij) ⊕ f(d⁰_ij).
        coord_range: bound of each edge's coordinate update through tanh (Å), as EDM.
        norm: the aggregation constant Z.
    """

    def __init__(self, hidden: int, edge_in: int, coord_range: float, norm: float) -> None:
        super().__init__()
        self.src = nn.Linear(hidden, hidden)  # W_s h_i (+ bias)
        self.dst = nn.Linear(hidden, hidden, bias=False)  # W_t h_j
        self.edge = nn.Linear(edge_in, hidden, bias=False)
        self.msg = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.att = nn.Linear(hidden, 1)
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # start near the identity map for positions
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.coord_range = coord_range
        self.norm = norm

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor, edge_feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` [|V|, H], ``x`` [|V|, 3] (Å), ``edge_index`` [2, |E|], ``edge_feat`` [|E|, edge_in] → (h, x)."""
        row, col = edge_index
        m = self.msg(self.src(h)[row] + self.dst(h)[col] + self.edge(edge_feat))
        m = m * torch.sigmoid(self.att(m))
        agg = torch.zeros_like(h).index_add_(0, row, m) / self.norm
        h = h + self.node(torch.cat([h, agg], dim=1))
        diff = x[row] - x[col]
        dist = torch.sqrt((diff**2).sum(1, keepdim=True) + 1e-8)
        w = torch.tanh(self.coord(m)) * self.coord_range
        x = x + torch.zeros_like(x).index_add_(0, row, diff / (dist + 1.0) * w) / self.norm
        return h, x


class EGNN(nn.Module):
    """The E(3)-equivariant noise predictor: invariant features in, (positions, features) out.

    Args:
        in_features: F, per-atom input features (atom-type one-hot, time, ...).
        out_features: width of the invariant per-atom output.
        hidden: H. layers: number of EGNN layers.
        distance_features: "squared" (d², EDM) or "rbf" (a Gaussian radial basis of d).
        num_rbf: K, radial basis size when distance_features == "rbf".
        norm: aggregation constant Z (EDM's QM9 model sums messages, Z = 1).
        coord_range: total bound (Å) of the position update across layers (EDM: 15).

    Forward shapes: ``h`` [|V|, F], ``x`` [|V|, 3] Å, ``edge_index`` [2, |E|] →
    ``(x_out [|V|, 3], h_out [|V|, out_features])``. Rotating/reflecting/translating ``x`` acts the same
    way on ``x_out`` and leaves ``h_out`` unchanged.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        layers: int = 4,
        distance_features: str = "squared",
        num_rbf: int = 16,
        norm: float = 1.0,
        coord_range: float = 15.0,
    ) -> None:
        super().__init__()
        if distance_features not in ("squared", "rbf"):
            raise ValueError(f"distance_features must be 'squared' or 'rbf', got {distance_features!r}")
        self.distance_features = distance_features
        self.rbf = RadialBasis(num_rbf) if distance_features == "rbf" else None
        edge_in = 2 * (num_rbf if self.rbf is not None else 1)
        self.embed = nn.Linear(in_features, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_in, coord_range / layers, norm) for _ in range(layers)
        )
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_features))

    def _distance_features(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        d2 = ((x[edge_index[0]] - x[edge_index[1]]) ** 2).sum(1, keepdim=True)
        if self.rbf is None:
            return d2
        return self.rbf(torch.sqrt(d2 + 1e-8))

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d0 = self._distance_features(x, edge_index)
        h = self.embed(h)
        x_in = x
        for layer in self.layers:
            edge_feat = torch.cat([self._distance_features(x, edge_index) if x is not x_in else d0, d0], dim=1)
            h, x = layer(h, x, edge_index, edge_feat)
        return x, self.out(h)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of a float tensor ``t`` [n] → [n, dim] (Vaswani et al.; DDPM's time embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)
