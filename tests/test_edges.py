"""Edge building without a loop over molecules: the vectorised fully connected edges equal the
former per-molecule template construction (edges, order and pair ids) on random batches; a collated
batch's pairs are the graph's (built once). ``python -m tests.test_edges`` times both constructions."""

import time

import pytest
import torch

from molediff.config import DiffusionConfig
from molediff.data.molecules import PAIRS, AtomPairs, ptr_from_counts
from molediff.graph import MolGraph
from molediff.models.egnn import fully_connected_edges
from molediff.molecular import MolecularDiffusion
from tests.test_molecular import _set


class TemplateEdges:
    """The former construction (a Python loop over molecules, templates cached per size), kept as the reference."""

    def __init__(self) -> None:
        self._templates: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _template(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if n not in self._templates:
            idx = torch.arange(n)
            row, col = idx.repeat_interleave(n), idx.repeat(n)
            keep = row != col
            row, col = row[keep], col[keep]
            pair = AtomPairs.local_pair_id(torch.tensor(n), torch.minimum(row, col), torch.maximum(row, col))
            self._templates[n] = (torch.stack([row, col]), pair)
        return self._templates[n]

    def __call__(self, ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = (ptr[1:] - ptr[:-1]).tolist()
        starts = ptr[:-1].tolist()
        pair_starts = ptr_from_counts(torch.tensor([n * (n - 1) // 2 for n in counts], dtype=torch.long))[:-1].tolist()
        edges, pairs = [], []
        for n, s, ps in zip(counts, starts, pair_starts):
            if n > 1:
                e, p = self._template(n)
                edges.append(e + s)
                pairs.append(p + ps)
        if not edges:
            return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return torch.cat(edges, dim=1), torch.cat(pairs)


OLD = TemplateEdges()


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_edges_equal_the_template_construction(seed):
    g = torch.Generator().manual_seed(seed)
    b = int(torch.randint(1, 40, (1,), generator=g))
    sizes = torch.randint(1, 121, (b,), generator=g)
    sizes[torch.rand(b, generator=g) < 0.2] = 1  # 1-atom molecules: no edges, no pairs
    ptr = ptr_from_counts(sizes)
    want, got = OLD(ptr), fully_connected_edges(ptr)
    assert got[0].dtype == got[1].dtype == torch.long
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # each edge names the pair of its two atoms
    pairs = PAIRS(ptr)
    assert torch.equal(pairs[:, got[1]], torch.stack([got[0].min(0).values, got[0].max(0).values]))


@pytest.mark.parametrize("sizes", [[1], [0], [1, 1, 1], [2], [0, 3, 1, 0, 2], [120, 1, 120], []])
def test_edge_cases(sizes):
    ptr = ptr_from_counts(torch.tensor(sizes, dtype=torch.long))
    want, got = OLD(ptr), fully_connected_edges(ptr)
    assert got[0].shape == (2, sum(n * (n - 1) for n in sizes))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_collated_batch_lends_its_pairs_to_the_graph():
    """The pairs are built once per training batch (in collation); the graph's are the batch's, and
    equal those built from ptr; a slice's are a block of them."""
    b = _set([4, 1, 7, 5]).collate([0, 1, 2, 3])
    x0 = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True)).encode(b)
    assert x0.graph.pair_index is b.pair_index
    assert torch.equal(b.pair_index, PAIRS(b.ptr)) and torch.equal(b.pair_index, MolGraph.from_ptr(b.ptr).pair_index)
    part = x0.graph.slice(1, 3)
    assert torch.equal(part.pair_index, PAIRS(part.ptr))
    with pytest.raises(ValueError, match="pair_index"):
        MolGraph.from_ptr(b.ptr, pair_index=b.pair_index[:, :-1])


def _time(fn, ptr, repeats=20):
    fn(ptr)  # warm (the template cache, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(ptr)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


if __name__ == "__main__":  # timing: 250 molecules of 20-80 atoms
    torch.set_num_threads(1)
    ptr = ptr_from_counts(torch.randint(20, 81, (250,), generator=torch.Generator().manual_seed(0)))
    cold = []
    for _ in range(5):
        t0 = time.perf_counter()
        TemplateEdges()(ptr)
        cold.append(time.perf_counter() - t0)
    old, new = _time(OLD, ptr), _time(fully_connected_edges, ptr)
    print(f"|E| = {int(fully_connected_edges(ptr)[0].shape[1])}: templates (warm) {old * 1e3:.1f} ms, "
          f"templates (cold) {min(cold) * 1e3:.1f} ms, vectorised {new * 1e3:.1f} ms")
