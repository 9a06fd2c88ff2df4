"""Self-conditioning: the network reads its previous estimate of the clean molecule. Equivariance
with the estimate, warm starts that begin at the source's function, the estimate reaching the
output, the sampler feeding the previous step's estimate, training's two passes."""

import pytest
import torch

from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.errors import UserError
from molediff.models import build_network, transfer_weights
from molediff.molecular import MolecularDiffusion
from molediff.state import MolState, remove_mean
from molediff.testing import assert_e3_equivariant
from tests.test_molecular import _set

TINY = ModelConfig(hidden=16, layers=2, pair_hidden=8)
JOINT = DiffusionConfig(charges=True, bonds=True)
JOINT_SC = DiffusionConfig(charges=True, bonds=True, self_condition=True)


def _state(d, sizes=(6, 4), seed=0, dtype=torch.float64):
    x = d.encode(_set(list(sizes), seed=seed).collate(list(range(len(sizes)))))
    g = torch.Generator().manual_seed(seed + 10)
    node = torch.randn(x.node.shape, generator=g, dtype=dtype)
    node[:, :3] = remove_mean(node[:, :3], x.graph.batch, x.graph.num_graphs)
    return MolState(node, torch.randn(x.pair.shape, generator=g, dtype=dtype), x.graph, x.parts)


def _randomise_new_inputs(net):
    """The self-conditioning read-ins start at zero (warm starts); give them weights so tests see them."""
    with torch.no_grad():
        for p in net.parameters():
            zero = p == 0  # whole zero read-ins and the zero columns of the transferred ones
            p[zero] = torch.randn(int(zero.sum()), dtype=p.dtype) * 0.3


@pytest.mark.parametrize("t", [10, 500])
def test_denoiser_with_an_estimate_is_e3_equivariant(t):
    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    net = build_network(TINY, d).double()
    _randomise_new_inputs(net)
    x, est = _state(d), _state(d, seed=5)
    n = x.node.shape[0]
    tt = torch.full((2,), t)

    def fn(p):  # rows 0..n-1: the noisy positions; n..2n-1: the estimate's positions (moved together)
        g = x.graph
        xs = MolState(torch.cat([remove_mean(p[:n], g.batch, 2), x.node[:, 3:]], dim=1), x.pair, g, x.parts)
        es = MolState(torch.cat([remove_mean(p[n:], g.batch, 2), est.node[:, 3:]], dim=1), est.pair, g, x.parts)
        out, _ = d.predict(net, xs, tt, self_cond=es)
        return out.node[:, :3], torch.cat([out.node[:, 3:].flatten(), out.pair.flatten()])[:, None]

    assert_e3_equivariant(fn, torch.cat([x.node[:, :3], est.node[:, :3]]), atol=1e-6)


def test_warm_start_begins_at_the_source_function_and_the_estimate_then_matters():
    torch.manual_seed(0)
    src_d, d = MolecularDiffusion(JOINT), MolecularDiffusion(JOINT_SC)
    src, net = build_network(TINY, src_d).double(), build_network(TINY, d).double()
    fresh = transfer_weights(net, src.state_dict(), (d.input_labels(), d.output_labels()),
                             (src_d.input_labels(), src_d.output_labels()))
    assert "pair_embed.weight (new input columns)" in fresh and "layers.0.edge.weight (new input columns)" in fresh
    x, est = _state(d), _state(d, seed=5)
    t = torch.tensor([300, 700])
    want = src_d.predict(src, x, t)[0]
    for estimate in (None, est):  # new inputs at zero: the estimate does not matter yet
        got = d.predict(net, x, t, self_cond=estimate)[0]
        torch.testing.assert_close(got.node, want.node, atol=1e-12, rtol=0)
        torch.testing.assert_close(got.pair, want.pair, atol=1e-12, rtol=0)
    _randomise_new_inputs(net)
    with torch.no_grad():
        for layer in net.layers:  # position updates start near zero (xavier gain 0.001): make them visible
            layer.coord[-1].weight.normal_(0, 0.3)
        a, b = d.predict(net, x, t)[0], d.predict(net, x, t, self_cond=est)[0]
    assert float((a.node[:, :3] - b.node[:, :3]).abs().max()) > 1e-4  # positions read the estimate's distances
    assert float((a.node[:, 3:] - b.node[:, 3:]).abs().max()) > 1e-4
    assert float((a.pair - b.pair).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="self_cond"):
        src_d.predict(src, x, t, self_cond=est)


@pytest.mark.parametrize("steps", [None, 8])
def test_sampler_feeds_each_step_the_previous_estimate(monkeypatch, steps):
    torch.manual_seed(0)
    d = MolecularDiffusion(DiffusionConfig(timesteps=20, charges=True, bonds=True, self_condition=True))
    net = build_network(TINY, d)
    calls = []
    predict = d.predict

    def recording(net_, x, t, self_cond=None, **kw):
        out = predict(net_, x, t, self_cond=self_cond, **kw)
        calls.append((self_cond, out[0]))
        return out

    monkeypatch.setattr(d, "predict", recording)
    d.sample(net, [4, 6], num_steps=steps, generator=torch.Generator().manual_seed(0))
    assert len(calls) == (steps or 20)
    assert calls[0][0] is None
    for (_, previous), (given, _) in zip(calls, calls[1:]):
        assert given is previous


@pytest.mark.parametrize("feedback", ["guided", "conditional", "per-branch"])
def test_under_guidance_the_next_step_reads_the_chosen_estimate(monkeypatch, feedback):
    """w = 2: two passes a step (conditional, then unconditional). Training shows each pass an estimate
    made with its own condition; "guided" feeds back u + w (c − u), "conditional" c, "per-branch" each
    pass its own."""
    from molediff.conditioning import condition_table

    torch.manual_seed(0)
    stats = {"gap": [0.25, 0.05, 0.02, 0.62]}
    d = MolecularDiffusion(DiffusionConfig(timesteps=20, charges=True, bonds=True, self_condition=True,
                                           conditions=["gap"], condition_stats=stats))
    net = build_network(TINY, d)
    _randomise_new_inputs(net)  # the condition read-in starts at zero: make c differ from u
    calls = []
    predict = d.predict

    def recording(net_, x, t, self_cond=None, cond=None, **kw):
        out = predict(net_, x, t, self_cond=self_cond, cond=cond, **kw)
        calls.append(("c" if cond is not None else "u", self_cond, out[0]))
        return out

    monkeypatch.setattr(d, "predict", recording)
    w, steps = 2.0, 4
    d.sample(net, [4, 6], num_steps=steps, generator=torch.Generator().manual_seed(0), cond=condition_table({"gap": 0.3}, ["gap"], 2),
             guidance=w, self_condition_feedback=feedback)
    assert [k for k, _, _ in calls] == ["c", "u"] * steps
    assert calls[0][1] is None and calls[1][1] is None
    for s in range(1, steps):
        (_, _, c_prev), (_, _, u_prev) = calls[2 * s - 2], calls[2 * s - 1]
        (_, c_read, _), (_, u_read, _) = calls[2 * s], calls[2 * s + 1]
        assert float((c_prev.node - u_prev.node).abs().max()) > 1e-4  # the branches differ, so the test can tell
        if feedback == "guided":
            want = u_prev + w * (c_prev - u_prev)
            for read in (c_read, u_read):
                torch.testing.assert_close(read.node, want.node)
                torch.testing.assert_close(read.pair, want.pair)
        elif feedback == "conditional":
            assert c_read is c_prev and u_read is c_prev
        else:
            assert c_read is c_prev and u_read is u_prev
    with pytest.raises(ValueError, match="feedback"):
        d.sample(net, [4], num_steps=2, self_condition_feedback="mean")


def test_training_uses_an_estimate_from_a_no_gradient_pass_on_half_the_batches(monkeypatch):
    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    net = build_network(TINY, d)
    x0 = d.encode(_set([5, 7]).collate([0, 1]))
    noise = x0.noise_like(torch.Generator().manual_seed(0))
    calls = []
    predict = d.predict

    def recording(net_, x, t, self_cond=None, **kw):
        calls.append((torch.is_grad_enabled(), self_cond is not None))
        return predict(net_, x, t, self_cond=self_cond, **kw)

    monkeypatch.setattr(d, "predict", recording)
    runs = []
    for _ in range(40):
        calls.clear()
        loss = d.training_losses(net, x0, torch.tensor([100, 600]), noise)["total"]
        loss.backward()
        runs.append(list(calls))
    with_estimate = [r for r in runs if len(r) == 2]
    assert all(r == [(False, False), (True, True)] for r in with_estimate)  # first pass untrained, then used
    assert all(r == [(True, False)] for r in runs if len(r) == 1)
    assert 8 <= len(with_estimate) <= 32  # about half


def test_self_conditioning_needs_x0():
    # (that a self-conditioned model overfits a handful of molecules: tests/test_molecular.py, "joint+sc")
    with pytest.raises(UserError, match="self-condition"):
        TrainConfig(diffusion=DiffusionConfig(parametrization="eps", self_condition=True)).validate()


def test_init_from_adds_self_conditioning_and_trains(tmp_path):
    from molediff.checkpoint import load_model_file
    from molediff.runstate import EMA_MODEL
    from molediff.training import Trainer, train
    from tests.test_training import tiny

    joint = DiffusionConfig(charges=True, bonds=True)
    train(tiny(max_steps=2, diffusion=joint, model=TINY), tmp_path / "src", progress=False)
    src = str(tmp_path / "src" / EMA_MODEL)
    t = Trainer(tiny(max_steps=4, init_from=src, diffusion=JOINT_SC, model=TINY), tmp_path / "sc", progress=False)
    assert t.config.diffusion.self_condition and t.step == 2
    assert "layers.0.edge.weight (new input columns)" in t.fresh_parameters
    t.run()
    _, cfg, meta = load_model_file(tmp_path / "sc" / EMA_MODEL)
    assert cfg.diffusion.self_condition and meta["step"] == 4
    # a warm start from that model without naming its parts keeps them (bonds, charges, self-conditioning)
    again = Trainer(tiny(max_steps=5, init_from=str(tmp_path / "sc" / EMA_MODEL), model=TINY), tmp_path / "again", progress=False)
    d = again.config.diffusion
    assert d.bonds and d.charges and d.self_condition and not again.fresh_parameters


def test_validation_loss_of_a_self_conditioned_model_is_reproducible_and_resume_is_exact(tmp_path):
    """The self-conditioning coin comes from the caller's generator, not torch's global stream: the
    validation loss does not move with it; an interrupted self-conditioned run continues exactly."""
    from molediff.training import Trainer, train, validation_loss
    from tests.test_training import _weights, tiny

    cfg = dict(diffusion=JOINT_SC, model=TINY)
    t = Trainer(tiny(max_steps=1, **cfg), tmp_path / "v", progress=False)
    data = t.valid_set.subset(range(48))
    want = validation_loss(t.diffusion, t.net, data, batch_size=4)  # 12 batches, 12 coins
    for k in range(3):
        torch.manual_seed(100 + k)  # another global stream each time
        assert validation_loss(t.diffusion, t.net, data, batch_size=4) == want
    train(tiny(max_steps=6, **cfg), tmp_path / "full", progress=False)
    train(tiny(max_steps=3, **cfg), tmp_path / "part", progress=False)
    train(tiny(max_steps=6, **cfg), tmp_path / "part", resume=True, progress=False)
    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for k in full["model"]:
        assert torch.equal(full["model"][k], part["model"][k]), k


def test_valence_feedback_reads_the_estimates_rule_breakers_and_warm_starts_at_the_source_function():
    from molediff.elements import AROMATIC

    torch.manual_seed(0)
    src_d = MolecularDiffusion(JOINT_SC)
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, self_condition=True, valence_feedback=True))
    assert d.input_labels()[-2:] == ["check:no_kekule", "check:valence"] or "check:valence" in d.input_labels()
    assert len(d.input_labels()) == d.network_widths()["in_features"]
    src, net = build_network(TINY, src_d).double(), build_network(TINY, d).double()
    transfer_weights(net, src.state_dict(), (d.input_labels(), d.output_labels()), (src_d.input_labels(), src_d.output_labels()))
    x, est = _state(d), _state(d, seed=5)
    t = torch.tensor([300, 700])
    flags = d._feedback(est, x)
    assert flags.shape == (x.node.shape[0], 2) and set(flags.unique().tolist()) <= {0.0, 1.0}
    assert not d._feedback(None, x).any()  # before the first estimate: nothing to report
    want = src_d.predict(src, x, t, self_cond=est)[0]
    got = d.predict(net, x, t, self_cond=est)[0]  # the new columns start at zero: the source's function
    torch.testing.assert_close(got.node, want.node, atol=1e-12, rtol=0)
    # a clean estimate of real molecules breaks no rule
    clean = d.encode(_set([6, 4]).collate([0, 1]))
    assert not d._feedback(clean, x)[:, 0].any()
    assert AROMATIC not in d.vocab.bond_orders  # QM9-style Kekulé vocabulary here: no aromatic systems at all


def test_valence_feedback_needs_self_conditioning_and_bonds():
    with pytest.raises(UserError, match="valence-feedback"):
        TrainConfig(diffusion=DiffusionConfig(bonds=True, valence_feedback=True)).validate()


def test_a_warm_start_adds_valence_feedback_to_a_self_conditioned_joint_model(tmp_path):
    from molediff.checkpoint import load_model_file
    from molediff.runstate import EMA_MODEL
    from molediff.training import Trainer, train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "src", progress=False)
    src = str(tmp_path / "src" / EMA_MODEL)
    # only the new option is named: self-conditioning and bonds come from the source model
    t = Trainer(tiny(max_steps=3, init_from=src, diffusion=DiffusionConfig(valence_feedback=True), model=TINY),
                tmp_path / "fb", progress=False)
    d = t.config.diffusion
    assert d.valence_feedback and d.self_condition and d.bonds
    t.run()
    _, cfg, _ = load_model_file(tmp_path / "fb" / EMA_MODEL)
    assert cfg.diffusion.valence_feedback


def test_ring_feedback_reads_the_estimates_smallest_rings_and_warm_starts_at_the_source_function(tmp_path):
    import numpy as np

    from molediff.chem.kekule import ring_feedback

    # a benzene fused to a cyclobutane, with a two-atom tail: 6-ring atoms, 4-ring atoms, acyclic atoms
    src, dst = np.array([0, 1, 2, 3, 4, 5, 0, 6, 7, 8]), np.array([1, 2, 3, 4, 5, 0, 6, 7, 1, 9])
    flags = ring_feedback(10, src, dst, np.ones(10, dtype=np.int64))
    assert flags.sum(1).tolist() == [1] * 8 + [0, 0]
    assert flags[[0, 1, 6, 7], 1].all() and flags[[2, 3, 4, 5], 3].all()  # 0 and 1 are in both: the smaller counts
    assert not ring_feedback(10, src, dst, np.zeros(10, dtype=np.int64)).any()  # bonds of order 0 are no bonds
    torch.manual_seed(0)
    src_d = MolecularDiffusion(JOINT_SC)
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, self_condition=True, ring_feedback=True))
    assert d.input_labels()[-5:] == ["ring:3", "ring:4", "ring:5", "ring:6", "ring:7+"]
    assert len(d.input_labels()) == d.network_widths()["in_features"]
    src_net, net = build_network(TINY, src_d).double(), build_network(TINY, d).double()
    transfer_weights(net, src_net.state_dict(), (d.input_labels(), d.output_labels()),
                     (src_d.input_labels(), src_d.output_labels()))
    x, est = _state(d), _state(d, seed=5)
    t = torch.tensor([300, 700])
    assert not d._feedback(None, x).any() and d._feedback(None, x).shape == (x.node.shape[0], 5)  # nothing yet
    assert d._feedback(est, x).sum(1).max() <= 1  # one smallest ring per atom at most
    want = src_d.predict(src_net, x, t, self_cond=est)[0]
    got = d.predict(net, x, t, self_cond=est)[0]  # the new columns start at zero: the source's function
    torch.testing.assert_close(got.node, want.node, atol=1e-12, rtol=0)
    with pytest.raises(UserError, match="ring-feedback"):
        TrainConfig(diffusion=DiffusionConfig(bonds=True, ring_feedback=True)).validate()


def test_a_warm_start_turns_an_x0_atom_head_into_logits_that_keep_its_types(tmp_path):
    """``--init-from`` a model whose atom types were trained by ε-MSE with ``--diffusion-atom-loss ce``:
    the atom rows of the output layer are scaled so the source's x̂_0 (one-hot × scale) becomes logits
    with a clear gap, not near-uniform ones; every other output is the source's."""
    from molediff.checkpoint import load_model_file
    from molediff.molecular import WARM_LOGIT_GAP
    from molediff.runstate import EMA_MODEL
    from molediff.training import Trainer, train
    from tests.test_training import tiny

    ce = DiffusionConfig(charges=True, bonds=True, self_condition=True, atom_loss="ce")
    src_d, d = MolecularDiffusion(JOINT_SC), MolecularDiffusion(ce)
    gains = d.output_gains(src_d)
    atoms = [lab for lab in d.output_labels() if lab.startswith("atom:")]
    assert sorted(gains) == sorted(atoms) and set(gains.values()) == {WARM_LOGIT_GAP / JOINT_SC.feature_scale}
    assert d.output_gains(d) == {} and src_d.output_gains(src_d) == {}  # nothing changes meaning
    with pytest.raises(UserError, match="cross-entropy"):  # logits have no factor back to x̂_0
        src_d.output_gains(d)
    # a new element's row keeps its initialisation: only rows the source wrote are rescaled
    more = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True, self_condition=True, atom_loss="ce",
                                              elements=[*src_d.vocab.elements, "S"]))
    assert sorted(more.output_gains(src_d)) == sorted(atoms)
    torch.manual_seed(0)
    src, net = build_network(TINY, src_d).double(), build_network(TINY, d).double()
    transfer_weights(net, src.state_dict(), (d.input_labels(), d.output_labels()),
                     (src_d.input_labels(), src_d.output_labels()), gains=gains)
    x, t = _state(d), torch.tensor([100, 600])
    want, _ = src_d.predict(src, x, t)
    got, logits = d.predict(net, x, t)
    cols = d.node_cols["atom"]
    gain = WARM_LOGIT_GAP / JOINT_SC.feature_scale
    torch.testing.assert_close(logits["atom"], want.node[:, cols] * gain)
    torch.testing.assert_close(got.node[:, cols], torch.softmax(want.node[:, cols] * gain, 1) * JOINT_SC.feature_scale)
    other = [c for c in range(got.node.shape[1]) if c not in range(cols.start, cols.stop)]
    torch.testing.assert_close(got.node[:, other], want.node[:, other])
    torch.testing.assert_close(got.pair, want.pair)
    # the run: a warm start may change the atom loss, and then trains the types by cross-entropy
    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "src", progress=False)
    run = Trainer(tiny(max_steps=3, init_from=str(tmp_path / "src" / EMA_MODEL), diffusion=ce, model=TINY),
                  tmp_path / "ce", progress=False)
    assert run.config.diffusion.atom_loss == "ce"
    x0 = run.diffusion.encode(_set([5, 4]).collate([0, 1]))
    assert "atom" in run.diffusion.training_losses(run.net, x0, torch.tensor([5, 900]), x0.noise_like())  # a CE term
    run.run()
    assert load_model_file(tmp_path / "ce" / EMA_MODEL)[1].diffusion.atom_loss == "ce"
