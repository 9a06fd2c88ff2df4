"""E(n)-equivariant graph network (Satorras et al. 2021; the EGNN of EDM, Hoogeboom et al. 2022),
with an optional hidden state per atom pair for models that generate bonds.

Each layer, on the fully connected graph of each molecule:

    m_ij = φ_e(h_i, h_j, d²_ij, d⁰²_ij [, d̂²_ij] [, e_ij]) · sigmoid(φ_a(m_ij))  messages (invariant)
    h_i ← h_i + φ_h(h_i, Σ_j m_ij / Z)                                  feature update (invariant)
    x_i ← x_i + Σ_j (x_i − x_j) / (d_ij + 1) · φ_x(m_ij) / Z            position update (equivariant)
    e_ij ← e_ij + φ_p(m_ij + m_ji)                                      pair update (invariant, symmetric)

with d⁰ the distances of the input geometry, d̂ those of the network's previous estimate of the clean
geometry (self-conditioning models) and Z a constant normalisation. The pair state e lives
on unordered pairs (i < j), so it is symmetric by construction: both directed messages of a pair read
the same e_ij and write into it through their sum. Pair inputs are the noisy bond one-hots; pair
outputs (bond predictions) read e_ij and h_i + h_j, both symmetric.

Speed on CPU: the first linear layer of φ_e is split into per-node projections ``W_s h_i + W_t h_j``
(computed |V| times, not |E| times), no padding. The edges are built by tensor arithmetic
(:func:`fully_connected_edges`), once per graph, outside the compiled region (:class:`EGNNDenoiser`).

Shapes: |V| atoms in the batch, |E| = Σ n(n−1) directed edges, |P| = |E|/2 unordered pairs,
F input features per atom, H hidden width, Hp pair width.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from molediff.config import EGNNConfig
from molediff.errors import UserError
from molediff.models.transfer import appended_columns, input_columns, output_rows, relabel

def fully_connected_edges(ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed edges (i ≠ j) within each molecule of a batch and each edge's unordered pair, built
    with tensor arithmetic on ``ptr``'s device (no loop over molecules, no per-size templates).

    ``ptr`` [B + 1] atom offsets → ``edge_index`` [2, |E|] (row = receiver i, col = sender j; molecule
    by molecule, i ascending, then j ascending: the order the EGNN's sums have always used) and
    ``edge_pair`` [|E|], the index of the pair (min(i, j), max(i, j)) among the batch's unordered pairs in
    :class:`~molediff.data.molecules.AtomPairs` order. |E| = Σ n(n − 1); 0- and 1-atom molecules have none.

    Atom i (local index l of an n-atom molecule) has n − 1 edges, numbered d = −l … n − 2 − l: d < 0
    are the senders before it (j = i + d), d ≥ 0 those after it (j = i + d + 1); with s = −1 for d < 0,
    else 0, j = i + d + 1 + s. The pair (a, b), a < b, has id U[a] + (b − a − 1), U[a] = the id of a's
    first pair (a, a + 1): U[i] + d for d ≥ 0 and U[j] + (−d − 1) = U[j] + (d XOR s) for d < 0.
    Intermediates are int32 when |E| allows (half the memory traffic of int64: faster on CPU).
    """
    device = ptr.device
    counts = ptr[1:] - ptr[:-1]
    num_edges = int((counts * (counts - 1)).sum())
    it = torch.int32 if num_edges < 2**31 else torch.long
    counts, num_atoms = counts.to(it), int(ptr[-1])
    atoms = torch.arange(num_atoms, dtype=it, device=device)
    mol = torch.repeat_interleave(torch.arange(counts.numel(), dtype=it, device=device), counts, output_size=num_atoms)
    n = counts[mol]  # [|V|] each atom's molecule size
    local = atoms - ptr[:-1].to(it)[mol]  # [|V|] l
    degree = n - 1
    first_edge = torch.cumsum(degree, 0, dtype=it) - degree  # [|V|] each atom's first edge
    pair_counts = counts * (counts - 1) // 2
    first_pair = (torch.cumsum(pair_counts, 0, dtype=it) - pair_counts)[mol] + local * (2 * n - local - 1) // 2  # [|V|] U
    out = torch.empty(3, num_edges, dtype=torch.long, device=device)  # row, col, pair: written in place
    row = torch.repeat_interleave(atoms, degree, output_size=num_edges)
    out[0].copy_(row)
    d = torch.arange(num_edges, dtype=it, device=device).sub_(torch.repeat_interleave(first_edge + local, degree, output_size=num_edges))
    s = d >> (31 if it == torch.int32 else 63)  # −1 where d < 0, else 0
    col = (row + 1).add_(d).add_(s)
    out[1].copy_(col)
    torch.add(first_pair[torch.minimum(row, col)], d.bitwise_xor_(s), out=out[2])
    return out[:2], out[2]


class FullyConnectedEdges:
    """:func:`fully_connected_edges` as a callable object (for callers that hold an edge builder)."""

    def __call__(self, ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ptr`` [B + 1] → ``edge_index`` [2, |E|] (row = receiver i, col = sender j), ``edge_pair`` [|E|]."""
        return fully_connected_edges(ptr)


def _zero_(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _sum_rows(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[k] = Σ values[i] over i with index[i] = k``: ``values`` [M, C], ``index`` [M] → [size, C].

    ``scatter_add_``, not ``index_add_``: on CPU, torch.compile lowers ``index_add_`` to a kernel of atomic
    adds that ran 2.4× slower on two threads than on one (the whole drug-like sampler 1.7× slower), and
    eager ``index_add_`` does not use a second thread at all; ``scatter_add_`` stays an ATen call that
    splits over threads (benchmarks/README.md, "sampling on two threads, and bfloat16 sampling")."""
    out = torch.zeros(size, values.shape[1], dtype=values.dtype, device=values.device)
    return out.scatter_add_(0, index.unsqueeze(1).expand(-1, values.shape[1]), values)


class EGNNLayer(nn.Module):
    """One EGNN layer. See the module docstring for the update rule.

    Args:
        hidden: H, the width of h and of messages.
        edge_in: width of the invariant edge features (d², d⁰²).
        coord_range: bound of each edge's coordinate update through tanh (Å), as EDM.
        norm: the aggregation constant Z.
        pair_hidden: Hp, width of the pair state (0: no pair state). Its read-in starts at zero, so a
            network with pairs starts out computing exactly what the same network without them does.
    """

    def __init__(self, hidden: int, edge_in: int, coord_range: float, norm: float, pair_hidden: int = 0) -> None:
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
        if pair_hidden:
            self.pair_in = _zero_(nn.Linear(pair_hidden, hidden, bias=False))
            self.pair_update = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, pair_hidden))

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor, edge_feat: torch.Tensor,
                e: torch.Tensor | None = None, edge_pair: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``h`` [|V|, H], ``x`` [|V|, 3] (Å), ``edge_index`` [2, |E|], ``edge_feat`` [|E|, edge_in],
        ``e`` [|P|, Hp] and ``edge_pair`` [|E|] when the network has pairs → (h, x, e)."""
        row, col = edge_index
        pre = self.src(h)[row] + self.dst(h)[col] + self.edge(edge_feat)
        if e is not None:
            pre = pre + self.pair_in(e)[edge_pair]
        m = self.msg(pre)
        m = m * torch.sigmoid(self.att(m))
        agg = _sum_rows(m, row, h.shape[0]) / self.norm
        h = h + self.node(torch.cat([h, agg], dim=1))
        diff = x[row] - x[col]
        dist = torch.sqrt((diff**2).sum(1, keepdim=True) + 1e-8)
        w = torch.tanh(self.coord(m)) * self.coord_range
        x = x + _sum_rows(diff / (dist + 1.0) * w, row, x.shape[0]) / self.norm
        if e is not None:
            both = _sum_rows(m, edge_pair, e.shape[0])
            e = e + self.pair_update(both)
        return h, x, e


class EGNN(nn.Module):
    """The E(3)-equivariant denoiser: invariant features in, (positions, features[, pair features]) out.

    Args:
        in_features: F, per-atom input features (atom-type one-hot, charges, time, ...).
        out_features: width of the invariant per-atom output.
        hidden: H. layers: number of EGNN layers.
        norm: aggregation constant Z (EDM's QM9 model sums messages, Z = 1).
        coord_range: total bound (Å) of the position update across layers (EDM: 15).
        pair_in, pair_out, pair_hidden: widths of the per-pair input, output and state (0: atoms only).
        self_condition: forward also takes ``x_cond`` [|V|, 3] (Å), the previous estimate of the clean
            geometry, whose squared distances join the edge features (the other self-conditioning
            inputs are columns of ``h`` and ``pair``).

    Forward (the message passing on given edges; the diffusion calls :class:`EGNNDenoiser`, which
    builds them): ``h`` [|V|, F], ``x`` [|V|, 3] Å, ``edge_index`` [2, |E|] and, with pairs, ``pair``
    [|P|, pair_in], ``edge_pair`` [|E|] and ``pair_index`` [2, |P|] (from :func:`fully_connected_edges`
    and :class:`~molediff.data.molecules.AtomPairs`) → ``(x_out [|V|, 3], h_out [|V|, out_features],
    pair_out [|P|, pair_out] or None)``. Rotating/reflecting/translating ``x`` acts the same way on
    ``x_out`` and leaves ``h_out`` and ``pair_out`` unchanged; ``pair_out`` is symmetric in (i, j).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64, layers: int = 4, norm: float = 1.0,
                 coord_range: float = 15.0, pair_in: int = 0, pair_out: int = 0, pair_hidden: int = 0,
                 self_condition: bool = False) -> None:
        super().__init__()
        if bool(pair_in) != bool(pair_out) or bool(pair_in) != bool(pair_hidden):
            raise ValueError("pair_in, pair_out and pair_hidden must all be set or all be 0")
        self.self_condition = self_condition
        self.embed = nn.Linear(in_features, hidden)
        edge_in = 3 if self_condition else 2
        self.layers = nn.ModuleList(EGNNLayer(hidden, edge_in, coord_range / layers, norm, pair_hidden) for _ in range(layers))
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_features))
        if pair_in:
            self.pair_embed = nn.Linear(pair_in, pair_hidden)
            self.pair_node = nn.Linear(hidden, hidden, bias=False)
            self.pair_head = nn.Sequential(nn.Linear(pair_hidden + hidden, hidden), nn.SiLU(), nn.Linear(hidden, pair_out))

    @staticmethod
    def _d2(x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return ((x[edge_index[0]] - x[edge_index[1]]) ** 2).sum(1, keepdim=True)

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor, pair: torch.Tensor | None = None,
                edge_pair: torch.Tensor | None = None, pair_index: torch.Tensor | None = None,
                x_cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x, h, e = self.trunk(h, x, edge_index, pair, edge_pair, x_cond)
        pair_out = None
        if e is not None:
            hn = self.pair_node(h)  # the pair's two atoms enter summed: symmetric in (i, j)
            pair_out = self.pair_head(torch.cat([e, hn[pair_index[0]] + hn[pair_index[1]]], dim=1))
        return x, self.out(h), pair_out

    def trunk(self, h: torch.Tensor, x: torch.Tensor, edge_index: torch.Tensor, pair: torch.Tensor | None = None,
              edge_pair: torch.Tensor | None = None, x_cond: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The message passing before the output heads: ``(x [|V|, 3] Å, h [|V|, H], e [|P|, pair_hidden] or
        None)``, the last layer's positions, atom states and pair states (the heads' inputs; invariant
        but for ``x``)."""
        d0 = self._d2(x, edge_index)
        fixed = [d0]
        if self.self_condition:  # distances of the previous estimate's geometry: invariant
            if x_cond is None:
                raise ValueError("a self-conditioning EGNN needs x_cond")
            fixed.append(self._d2(x_cond, edge_index))
        h = self.embed(h)
        e = self.pair_embed(pair) if pair is not None else None
        x_in = x
        for layer in self.layers:
            edge_feat = torch.cat([self._d2(x, edge_index) if x is not x_in else d0, *fixed], dim=1)
            h, x, e = layer(h, x, edge_index, edge_feat, e, edge_pair)
        return x, h, e


class EGNNDenoiser(EGNN):
    """The EGNN behind the denoiser interface (:class:`molediff.models.Denoiser`):
    ``net(h, pos, graph, pair=None, x_cond=None) -> (pos_out, h_out, pair_out)``.

    It builds the edges it needs from the graph: the fully connected directed edges of each molecule
    and their pairs (:func:`fully_connected_edges`, on the graph's device), kept for the last graph
    seen, so the steps of a sampling run (one graph) build them once. Then it runs the message passing
    (:meth:`EGNN.forward`). :meth:`compile` compiles that message passing only: the edge building
    stays eager, so the compiled region sees tensors and no data-dependent edge construction.
    Parameters and their names are the EGNN's (checkpoints load either way).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._edges: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (ptr, edge_index, edge_pair)
        self._compiled = None
        self._compiled_ok = False

    def edges(self, graph) -> tuple[torch.Tensor, torch.Tensor]:
        """``edge_index`` [2, |E|] and ``edge_pair`` [|E|] of ``graph`` (a MolGraph). Graphs are not
        changed once built, so the same ``ptr`` tensor means the same edges (it is held, so its identity
        cannot be reused by another tensor)."""
        if self._edges is None or self._edges[0] is not graph.ptr:
            self._edges = (graph.ptr, *fully_connected_edges(graph.ptr))
        return self._edges[1], self._edges[2]

    def forward(self, h: torch.Tensor, pos: torch.Tensor, graph, pair: torch.Tensor | None = None,
                x_cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``h`` [|V|, F], ``pos`` [|V|, 3] Å, ``graph`` (``ptr`` [B + 1], ``pair_index`` [2, |P|]), ``pair``
        [|P|, pair_in] or None, ``x_cond`` [|V|, 3] Å (self-conditioning) → as :meth:`EGNN.forward`."""
        edge_index, edge_pair = self.edges(graph)
        args = (h, pos, edge_index, pair, edge_pair, graph.pair_index, x_cond)
        if self._compiled is not None:
            if self._compiled_ok:
                return self._compiled(*args)
            try:  # the first call compiles: a compiler that fails leaves the eager network working
                out = self._compiled(*args)
            except Exception as exc:  # noqa: BLE001 - inductor raises many kinds (CppCompileError, ...)
                self._compiled = None
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {first}); running without it",
                              RuntimeWarning, stacklevel=2)
            else:
                self._compiled_ok = True
                return out
        return super().forward(*args)

    def features(self, h: torch.Tensor, pos: torch.Tensor, graph, pair: torch.Tensor | None = None,
                 x_cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The invariant states the output heads read, for the inputs of :meth:`forward`: atoms' ``[|V|, H]``
        and pairs' ``[|P|, pair_hidden]`` (None for an atoms-only network). Always eager. The reader:
        distribution matching's discriminator (:class:`molediff.distill.Discriminator`)."""
        edge_index, edge_pair = self.edges(graph)
        _, h, e = self.trunk(h, pos, edge_index, pair, edge_pair, x_cond)
        return h, e

    def compile(self, *args, **kwargs) -> None:
        """``torch.compile`` the message passing (in place, as :meth:`torch.nn.Module.compile`: parameter
        names unchanged); the edges are built outside the compiled region. Compilation happens at the
        first call; if it fails there (no C++ compiler, an inductor error), that call and all later ones
        run eagerly, with one warning."""
        self._compiled = torch.compile(super().forward, *args, **kwargs)
        self._compiled_ok = False  # until its first call has compiled and run


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- the "egnn" architecture
def build(params: EGNNConfig, widths: dict[str, Any]) -> EGNNDenoiser:
    """The EGNN of ``params`` (:class:`~molediff.config.EGNNConfig`) with the diffusion's input/output
    ``widths`` (:meth:`~molediff.molecular.MolecularDiffusion.network_widths`): a pair state only where
    there are pair inputs."""
    pair_hidden = params.pair_hidden if "pair_in" in widths else 0
    return EGNNDenoiser(hidden=params.hidden, layers=params.layers, norm=params.norm, coord_range=params.coord_range,
                        pair_hidden=pair_hidden, **widths)


#: the last linear of each residual branch of an EGNN layer: zero, the layer adds nothing to h, x, e
_RESIDUAL_OUTPUTS = ("node.2.", "coord.2.", "pair_update.2.")


def _appended_layers(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` completed with the layers ``own`` has beyond the source's (a deeper network): each a
    copy of the source's last layer with its residual read-outs zeroed, so it starts as the identity
    (the per-layer position bound is kept by :meth:`~molediff.config.EGNNConfig.warm_start`) and learns
    from there; returns ``(state, names of the appended layers)``."""
    count = lambda keys: len({k.split(".")[1] for k in keys if k.startswith("layers.")})  # noqa: E731
    have, want = count(state), count(own)
    if want <= have or have == 0:
        return state, []
    state = dict(state)
    last = f"layers.{have - 1}."
    for i in range(have, want):
        for key, value in list(state.items()):
            if key.startswith(last):
                rest = key[len(last):]
                state[f"layers.{i}.{rest}"] = torch.zeros_like(value) if rest.startswith(_RESIDUAL_OUTPUTS) else value.clone()
    return state, [f"layers.{i} (appended, starts as the identity)" for i in range(have, want)]


def transfer_weights(net: nn.Module, state: dict[str, torch.Tensor], new_labels: tuple[list[str], list[str]],
                     old_labels: tuple[list[str], list[str]],
                     pair_labels: tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]] | None = None,
                     gains: dict[str, float] | None = None) -> list[str]:
    """Load ``state`` (an EGNN's weights for another state layout) into the EGNN ``net``, by label
    (:mod:`molediff.models.transfer`; see :func:`molediff.models.transfer_weights` for the arguments).

    Tensors of equal shape are copied; the input embedding's columns (``embed``) and the output layer's
    rows (``out``) by label; the pair read-in's columns (``pair_embed``) and the pair head's rows
    (``pair_head.2``) by pair label where the pair layouts differ (a Kekulé model's bonds carry over to
    one with an aromatic type); inputs appended to the pair read-in and the edge layers
    (self-conditioning) start at zero; ``gains`` scale the rows of the last output layer (``out``) by
    label. Returns the names of parameters left at their initialisation.
    """
    own = net.state_dict()
    (new_in, new_out), (old_in, old_out) = new_labels, old_labels
    state, appended = _appended_layers(own, state)
    fresh = [k for k in own if k not in state] + appended
    for key, value in state.items():
        if key not in own:
            raise UserError(f"the source weights have {key}, which this network does not")
        target = own[key]
        if pair_labels is not None and pair_labels[0] != pair_labels[1]:
            (new_pin, new_pout), (old_pin, old_pout) = pair_labels
            if key == "pair_embed.weight" and value.shape[1] == len(old_pin) and target.shape[1] == len(new_pin):
                relabel(target, value, new_pin, old_pin, 1, "reads pair input")
                fresh.append(key + " (new pair input columns)")
                continue
            if key.startswith("pair_head.2.") and value.shape[0] == len(old_pout) and target.shape[0] == len(new_pout):
                relabel(target, value, new_pout, old_pout, 0, "writes pair output")
                fresh.append(key + " (new pair output rows)")
                continue
        relabelled_in = key == "embed.weight" and value.shape[1] == len(old_in) and new_in != old_in
        relabelled_out = key.startswith("out.") and value.shape[0] == len(old_out) and new_out != old_out
        if target.shape == value.shape and not relabelled_in and not relabelled_out:
            target.copy_(value)
        elif key == "embed.weight" and value.shape[1] == len(old_in) and target.shape[0] == value.shape[0]:
            input_columns(target, value, new_in, old_in)
        elif (key == "pair_embed.weight" or key.endswith(".edge.weight")) and target.shape[0] == value.shape[0] \
                and target.shape[1] > value.shape[1]:
            appended_columns(target, value)
            fresh.append(key + " (new input columns)")
        elif key.startswith("out.") and value.shape[0] == len(old_out) and target.shape[1:] == value.shape[1:]:
            output_rows(target, value, new_out, old_out)
            fresh.append(key + " (new rows)")
        else:
            raise UserError(f"{key}: shape {tuple(value.shape)} in the source, {tuple(target.shape)} here; "
                            "the architectures differ (width, layers)")
    last = f"out.{len(net.out) - 1}."
    for label, gain in (gains or {}).items():
        for key in (last + "weight", last + "bias"):
            own[key][new_out.index(label)] *= gain
    net.load_state_dict(own)
    return fresh
