"""The network behind an interface: a second, trivial denoiser (no edges, no message passing) trains
through MolecularDiffusion.training_losses and samples through MolecularDiffusion.sample with nothing
in molediff.molecular written for it; the graph carries no network's edges; the EGNN builds its own."""

import pytest
import torch
from torch import nn

from molediff.config import DiffusionConfig, ModelConfig
from molediff.draws import random_fragments
from molediff.graph import MolGraph
from molediff.models import DenoiserInputs, EGNNDenoiser, build_network
from molediff.models.egnn import fully_connected_edges
from molediff.molecular import MolecularDiffusion
from tests.test_molecular import _set


class InvariantMLP(nn.Module):
    """A tiny denoiser on invariants: per atom an MLP of its inputs and the sum of its pairs' inputs;
    positions move along the atom's offset from its molecule's centroid (an equivariant update);
    per pair an MLP of the pair's inputs and its two atoms' hidden states (summed: symmetric)."""

    def __init__(self, in_features, out_features, pair_in=0, pair_out=0, self_condition=False, hidden=32):
        super().__init__()
        self.atom = nn.Sequential(nn.Linear(in_features + pair_in + (1 if self_condition else 0), hidden), nn.SiLU())
        self.head = nn.Linear(hidden, out_features)
        self.scale = nn.Linear(hidden, 1)
        self.pair_head = nn.Sequential(nn.Linear(pair_in + hidden, hidden), nn.SiLU(), nn.Linear(hidden, pair_out)) if pair_in else None

    def forward(self, h, pos, graph, pair=None, x_cond=None):
        i, j = graph.pair_index
        parts = [h]
        if pair is not None:
            parts.append(torch.zeros(h.shape[0], pair.shape[1], dtype=h.dtype).index_add_(0, i, pair).index_add_(0, j, pair))
        if x_cond is not None:  # an invariant of the estimate: its squared distance to the centroid
            parts.append((x_cond - _centroid(x_cond, graph)).pow(2).sum(1, keepdim=True))
        z = self.atom(torch.cat(parts, dim=1))
        pos_out = pos + self.scale(z) * (pos - _centroid(pos, graph))
        pair_out = self.pair_head(torch.cat([pair, z[i] + z[j]], dim=1)) if pair is not None else None
        return pos_out, self.head(z), pair_out


def _centroid(pos, graph):
    sums = torch.zeros(graph.num_graphs, 3, dtype=pos.dtype).index_add_(0, graph.batch, pos)
    return (sums / torch.bincount(graph.batch, minlength=graph.num_graphs).clamp(min=1)[:, None])[graph.batch]


CONFIGS = [DiffusionConfig(), DiffusionConfig(parametrization="eps"),
           DiffusionConfig(charges=True, bonds=True, self_condition=True),
           DiffusionConfig(charges=True, bonds=True, fragments=0.5)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["x0", "eps", "joint+sc", "joint+fragments"])
def test_a_second_denoiser_trains_and_samples_through_the_diffusion(cfg):
    torch.manual_seed(0)
    d = MolecularDiffusion(cfg)
    net = InvariantMLP(**d.network_widths())
    b = _set([5, 7, 6, 4], seed=1).collate([0, 1, 2, 3])
    fixed = random_fragments(b, 1.0, torch.Generator().manual_seed(0)) if cfg.fragments else None
    x0 = d.encode(b, fixed)
    t = torch.tensor([50, 200, 400, 700])
    noise = x0.noise_like(torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = d.training_losses(net, x0, t, noise, generator=torch.Generator().manual_seed(len(losses)))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], (losses[0], losses[-1])
    mols = d.sample(net, [4, 6], num_steps=4, generator=torch.Generator().manual_seed(0))
    assert mols.pos.shape == (10, 3) and bool(torch.isfinite(mols.pos).all())
    assert mols.atom_type.shape == (10,) and (mols.bond_order is not None) == cfg.bonds
    if cfg.fragments:  # a fragment held through sampling, as with the EGNN
        known = d.encode(b, fixed)
        out = d.sample(net, b.ptr[1:] - b.ptr[:-1], num_steps=3, generator=torch.Generator().manual_seed(0), known=known)
        assert torch.equal(out.atom_type[fixed], b.atom_type[fixed])


def test_the_inputs_the_diffusion_hands_a_network():
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, self_condition=True))
    x0 = d.encode(_set([5, 3]).collate([0, 1]))
    inputs = d.network_inputs(x0, torch.tensor([10, 900]))
    widths = d.network_widths()
    assert isinstance(inputs, DenoiserInputs) and inputs.graph is x0.graph
    assert inputs.h.shape == (8, widths["in_features"]) and inputs.pair.shape == (10 + 3, widths["pair_in"])
    assert torch.equal(inputs.pos, x0.node[:, :3]) and torch.equal(inputs.x_cond, torch.zeros(8, 3))
    seen = {}

    def spy(h, pos, graph, pair=None, **extra):
        seen.update(extra)
        return pos, h[:, : widths["out_features"]], pair[:, : widths["pair_out"]]

    inputs.apply(spy, flag=1)
    assert set(seen) == {"x_cond", "flag"}
    plain = MolecularDiffusion(DiffusionConfig()).network_inputs(MolecularDiffusion(DiffusionConfig()).encode(
        _set([5, 3]).collate([0, 1])), torch.tensor([10, 900]))
    assert plain.pair is None and plain.x_cond is None  # atoms-only, no self-conditioning: nothing extra


def test_the_graph_holds_no_edges_and_the_egnn_builds_and_keeps_its_own():
    g = MolGraph.from_ptr(torch.tensor([0, 4, 5, 11]))
    assert not hasattr(g, "edge_index") and not hasattr(g, "edge_pair")
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True))
    net = build_network(ModelConfig(hidden=16, layers=2, pair_hidden=8), d)
    assert isinstance(net, EGNNDenoiser)
    e, p = net.edges(g)
    want = fully_connected_edges(g.ptr)
    assert torch.equal(e, want[0]) and torch.equal(p, want[1])
    assert net.edges(g)[0] is e  # the same graph: built once (a sampling run's steps share it)
    assert net.edges(MolGraph.from_ptr(torch.tensor([0, 4, 5, 11])))[0] is not e
    # parameter names are the plain EGNN's: checkpoints of either load into the other
    from molediff.models import EGNN

    widths = d.network_widths()
    plain = EGNN(hidden=16, layers=2, pair_hidden=8, **widths)
    assert list(plain.state_dict()) == list(net.state_dict())


def test_networks_come_from_the_registry_with_their_own_parameter_block_and_transfer(tmp_path):
    """An architecture is a row of ARCHITECTURES (parameter block, network, build, transfer); a config
    names it as model.arch, and one saved before that field existed (the bundled qm9 model's) is an EGNN."""
    import json

    from molediff.config import MODEL_CONFIGS, EGNNConfig, TrainConfig
    from molediff.errors import UserError
    from molediff.models import ARCHITECTURES, transfer_weights

    assert set(ARCHITECTURES) == set(MODEL_CONFIGS) == {"egnn"} and ARCHITECTURES["egnn"].params is EGNNConfig
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True))
    net = build_network(EGNNConfig(hidden=8, layers=1, pair_hidden=4), d)
    assert isinstance(net, ARCHITECTURES["egnn"].network)
    labels = (d.input_labels(), d.output_labels())
    assert transfer_weights(net, net.state_dict(), labels, labels, (d.pair_labels(), d.pair_labels())) == []
    saved = TrainConfig().to_dict()
    assert saved["model"]["arch"] == "egnn" and TrainConfig.from_dict(saved).to_dict() == saved
    old = {**saved, "model": {k: v for k, v in saved["model"].items() if k != "arch"}}
    assert isinstance(TrainConfig.from_dict(old).model, EGNNConfig)  # written before "arch" existed
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**saved, "model": {**saved["model"], "arch": "transformer"}}))
    with pytest.raises(UserError, match="model.arch 'transformer'.*egnn"):
        TrainConfig.load_json(path)
