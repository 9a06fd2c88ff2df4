"""Few-step students (issue 38). Progressive distillation: the target's algebra, the loss teaching a student the teacher's
two steps in one, and `molediff train --distill-from` giving a model file that samples in its own steps.
Distribution matching (``--method dmd``): the direction of its loss, what it trains, and a run that
resumes with its second denoiser and gives a student that samples stochastically."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from molediff.config import DiffusionConfig, ModelConfig, TrainConfig
from molediff.distill import distillation_loss, distillation_target, teacher_midpoint
from molediff.errors import UserError
from molediff.models import build_network
from molediff.molecular import MolecularDiffusion
from molediff.state import MolState
from tests.test_molecular import _set

TINY = ModelConfig(hidden=16, layers=2, pair_hidden=8)
JOINT_SC = DiffusionConfig(charges=True, bonds=True, self_condition=True)


def test_the_target_is_the_x0_whose_one_step_lands_where_the_teachers_two_did():
    d = MolecularDiffusion(DiffusionConfig(charges=True, bonds=True))
    x = d.encode(_set([5, 7]).collate([0, 1]))
    g = torch.Generator().manual_seed(0)
    x = MolState(x.node.double(), x.pair.double(), x.graph, x.parts)
    z_t, z_next = x.noise_like(g), x.noise_like(g)
    for t, t_next in ((800, 400), (120, 37)):
        target = distillation_target(d.schedule, z_t, t, z_next, t_next)
        landed = d.schedule.ddim_step(target, t, t_next, z_t, eta=0.0)
        torch.testing.assert_close(landed.node, z_next.node, atol=1e-5, rtol=0)  # ddim_step reads the float32 table
        torch.testing.assert_close(landed.pair, z_next.pair, atol=1e-5, rtol=0)  # ddim_step reads the float32 table
    assert distillation_target(d.schedule, z_t, 10, z_next, -1) is z_next  # the last step returns x̂_0 itself
    assert teacher_midpoint(999, 499) == 749 and teacher_midpoint(13, -1) == 6


def test_the_loss_teaches_the_student_the_teachers_two_steps():
    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    teacher = build_network(TINY, d)
    student = build_network(TINY, d)
    student.load_state_dict(teacher.state_dict())
    x0 = d.encode(_set([5, 7, 6, 4]).collate([0, 1, 2, 3]))
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)

    def loss_at(seed):
        return distillation_loss(d, student, teacher, x0, steps=4, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        before = sum(float(loss_at(s)["mse"]) for s in range(8))
    for step in range(60):
        loss = loss_at(100 + step)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sum(float(loss_at(s)["mse"]) for s in range(8))
    assert after < 0.7 * before
    for p in teacher.parameters():
        assert p.grad is None  # the teacher is never trained


def test_distill_from_trains_a_student_that_samples_in_its_own_steps(tmp_path):
    from molediff.checkpoint import load_model_file
    from molediff.runstate import EMA_MODEL
    from molediff.sampling import MoleculeGenerator
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    train(tiny(max_steps=4, distill_from=teacher, distill_steps=3, model=TINY), tmp_path / "student", progress=False)
    _, cfg, meta = load_model_file(tmp_path / "student" / EMA_MODEL)
    assert cfg.distill_from == teacher and cfg.diffusion.self_condition and cfg.diffusion.bonds  # the teacher's layout
    assert meta["default_steps"] == 3 and meta["default_eta"] == 0.0 and meta["step"] == 4
    gen = MoleculeGenerator.from_file(tmp_path / "student" / EMA_MODEL)
    req = gen.request(2)
    assert (req.steps, req.eta) == (3, 0.0)  # what it learned, unless asked otherwise
    assert gen.request(2, steps=6, eta=1.0).steps == 6
    assert len(list(gen.run(req))) == 2


def test_distillation_options_are_checked():
    with pytest.raises(UserError, match="--distill-steps"):
        TrainConfig(distill_from="teacher.pt").validate()
    with pytest.raises(UserError, match="--distill-from"):
        TrainConfig(distill_steps=4).validate()


def test_distill_command_runs_stages_resumes_and_explains_mistakes(tmp_path, capsys):
    """`molediff distill --from MODEL --out DIR`: the teacher's recipe, half its steps, resumable; a
    student distils further with --from its file; user mistakes are refused with the reason."""
    import dataclasses

    from molediff.checkpoint import load_model_file, save_model_file
    from molediff.cli import main as cli
    from molediff.runstate import EMA_MODEL
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=4, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    s1 = tmp_path / "s1"
    quiet = ["--no-progress", "--eval-every-steps", "0"]
    assert cli(["distill", "--from", teacher, "--out", str(s1), "--max-steps", "3", *quiet]) == 0
    out = capsys.readouterr().out
    assert "learns its path at 76" in out and f"--checkpoint {s1 / EMA_MODEL}" in out
    _, cfg, meta = load_model_file(s1 / EMA_MODEL)
    assert (cfg.distill_from, cfg.distill_steps, cfg.lr, meta["default_steps"]) == (teacher, 38, 1e-4, 38)
    assert meta["step"] == 3 and not meta.get("learning_curve")  # its own steps (the teacher had 4): --max-steps counts them
    assert cfg.model == TINY and cfg.diffusion.self_condition  # the teacher's network and parts
    assert cli(["distill", "--resume", "--out", str(s1), "--max-steps", "5", *quiet]) == 0
    assert load_model_file(s1 / EMA_MODEL)[2]["step"] == 5
    # the next stage: the student is the teacher, at half its steps
    assert cli(["distill", "--from", str(s1 / EMA_MODEL), "--out", str(tmp_path / "s2"), "--max-steps", "1", "--lr", "3e-5", *quiet]) == 0
    _, cfg2, meta2 = load_model_file(tmp_path / "s2" / EMA_MODEL)
    assert (cfg2.distill_steps, cfg2.lr, meta2["default_steps"]) == (19, 3e-5, 19)
    # a student's training checkpoint as the teacher: its steps from its config
    assert cli(["distill", "--from", str(s1 / "checkpoint.pt"), "--out", str(tmp_path / "s3"), "--max-steps", "1", *quiet]) == 0
    assert load_model_file(tmp_path / "s3" / EMA_MODEL)[1].distill_steps == 19
    capsys.readouterr()

    # a student samples as its teacher does besides its steps (restarts), knowing its training molecules
    state, config, meta = load_model_file(teacher)
    restarting = tmp_path / "restarting.pt"
    save_model_file(restarting, state, config, {**meta, "default_restarts": 3, "restart_rings": True, "default_noise_scale": 0.7})
    assert cli(["distill", "--from", str(restarting), "--out", str(tmp_path / "r"), "--max-steps", "1", *quiet]) == 0
    got = load_model_file(tmp_path / "r" / EMA_MODEL)[2]
    assert (got["default_restarts"], got["restart_rings"], got["default_steps"]) == (3, True, 38)
    assert "default_noise_scale" not in got  # η 0 injects no noise
    capsys.readouterr()

    elsewhere = tmp_path / "elsewhere.pt"
    save_model_file(elsewhere, state, dataclasses.replace(config, data=str(tmp_path / "gone")), meta)
    for argv, why in (
        (["--out", str(tmp_path / "x")], "--from MODEL names the teacher"),
        (["--from", "nope", "--out", str(tmp_path / "x")], "not a bundled model"),
        (["--from", teacher, "--steps", "75", "--out", str(tmp_path / "x")], "fewer steps than its teacher"),
        (["--from", teacher, "--steps", "0", "--out", str(tmp_path / "x")], "≥ 1"),
        (["--resume", "--from", teacher, "--out", str(s1)], "leave out --from"),
        (["--resume", "--out", str(tmp_path / "none")], "holds no distillation run"),
        (["--resume", "--out", str(tmp_path / "teacher")], "not a distillation"),
        (["--from", str(elsewhere), "--out", str(tmp_path / "x")], "pass --data"),
        (["--from", teacher, "--out", str(s1)], "exists"),
    ):
        assert cli(["distill", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, (argv, err)


# ---------------------------------------------------------------- distribution matching (--method dmd)

def _copies_of_a_teacher():
    """A tiny joint diffusion, a teacher, a student and a fake denoiser that are copies of it, and a graph of
    three molecules (5, 7 and 6 atoms)."""
    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    teacher, student, fake = (build_network(TINY, d) for _ in range(3))
    for net in (student, fake):
        net.load_state_dict(teacher.state_dict())
    return d, teacher, student, fake, d.encode(_set([5, 7, 6]).collate([0, 1, 2])).graph


def test_dmd_loss_is_zero_while_the_fake_denoiser_is_the_teacher_and_trains_only_the_student():
    """At the start the fake denoiser is a copy of the teacher: no direction, no loss. Once it differs, the
    loss's gradient reaches the student alone, and its sample has the batch's atoms and pairs."""
    from molediff.distill import dmd_generator_loss, student_chain

    d, teacher, student, fake, graph = _copies_of_a_teacher()
    out = dmd_generator_loss(d, student, teacher, fake, graph, steps=3, generator=torch.Generator().manual_seed(1))
    assert float(out["total"].detach()) == 0.0
    assert out["sample"].node.shape == (18, d.node_width) and out["sample"].pair.shape[0] == graph.pair_index.shape[1]
    assert not out["sample"].node.requires_grad
    with torch.no_grad():
        for p in fake.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = dmd_generator_loss(d, student, teacher, fake, graph, steps=3, generator=torch.Generator().manual_seed(1))
    assert float(out["total"]) > 0
    out["total"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    assert all(p.grad is None for net in (teacher, fake) for p in net.parameters())
    # the backward simulation stops at a step of the student's grid, its estimate from the step before
    seen = set()
    for seed in range(12):
        x, t, estimate = student_chain(d, student, graph, 3, torch.Generator().manual_seed(seed))
        seen.add(t)
        assert (estimate is None) == (t == d.schedule.set_timesteps(3).tolist()[0])
    assert seen == set(d.schedule.set_timesteps(3).tolist())


def test_dmd_direction_points_from_the_fake_estimate_to_the_teachers():
    """One small step of the student along the loss's gradient moves its sample towards the teacher's x̂_0
    and away from the fake's: the gradient with respect to the sample is (fake − teacher) / scale."""
    from molediff import distill

    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    teacher, student, fake = (build_network(TINY, d) for _ in range(3))
    student.load_state_dict(teacher.state_dict())
    graph = d.encode(_set([5, 7]).collate([0, 1])).graph
    captured = {}
    real_predict = d.predict

    def spy(net, x_t, t, **kw):
        out = real_predict(net, x_t, t, **kw)
        captured.setdefault(id(net), []).append(out[0])
        return out

    d.predict = spy
    out = distill.dmd_generator_loss(d, student, teacher, fake, graph, steps=2, generator=torch.Generator().manual_seed(3))
    sample = captured[id(student)][-1]
    real, fake_x0 = captured[id(teacher)][-1], captured[id(fake)][-1]
    (grad,) = torch.autograd.grad(out["total"], sample.node)
    direction = (fake_x0.node - real.node)
    # same sign as (fake − teacher) wherever that is not tiny; positive per-molecule factor
    big = direction.abs() > 1e-3
    assert bool((torch.sign(grad[big]) == torch.sign(direction[big])).all())


def test_distill_method_dmd_trains_resumes_and_its_student_samples_stochastically(tmp_path, capsys):
    from molediff.checkpoint import load_model_file, safe_torch_load
    from molediff.cli import main as cli
    from molediff.runstate import CHECKPOINT, EMA_MODEL
    from molediff.sampling import MoleculeGenerator
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    run = tmp_path / "dmd"
    quiet = ["--no-progress", "--eval-every-steps", "0"]
    # an untrained teacher's endpoints fail the honest rule: the recipe's regression term is left out
    assert cli(["distill", "--from", teacher, "--method", "dmd", "--out", str(run), "--max-steps", "2",
                "--distill-regression", "0", *quiet]) == 0
    capsys.readouterr()
    state = safe_torch_load(run / CHECKPOINT)
    assert set(state) >= {"fake", "fake_optimizer"} and state["config"]["distill_method"] == "dmd"
    teacher_weights = load_model_file(teacher)[0]
    assert any(not torch.equal(state["fake"][k], teacher_weights[k]) for k in teacher_weights)  # it learnt the student's samples
    _, cfg, meta = load_model_file(run / EMA_MODEL)
    assert (cfg.distill_steps, meta["default_steps"], meta["default_eta"], meta["default_noise_scale"]) == (10, 10, 1.0, 1.0)
    assert (cfg.distill_spacing, cfg.distill_keep, cfg.distill_regression, cfg.distill_regression_first, cfg.lr) == \
        ("finish4", 10.0, 0.0, False, 2e-5)  # the recipe where the command line leaves it open
    assert cli(["distill", "--resume", "--out", str(run), "--max-steps", "3", *quiet]) == 0
    assert load_model_file(run / EMA_MODEL)[2]["step"] == 3
    gen = MoleculeGenerator.from_file(run / EMA_MODEL)
    req = gen.request(2)
    assert (req.steps, req.eta, req.noise_scale, req.spacing) == (10, 1.0, 1.0, "finish4")
    assert len(list(gen.run(req))) == 2
    capsys.readouterr()
    assert cli(["distill", "--resume", "--method", "dmd", "--out", str(run)]) == 2
    assert "leave out --from, --steps and --method" in capsys.readouterr().err


def test_method_dmd_trains_with_the_measured_recipe_unless_told_otherwise(tmp_path):
    """``molediff distill --method dmd`` alone is the recipe of benchmarks/README.md (10 steps on the finish4 grid,
    keep 10, first-estimate regression, lr 2e-5); each option given wins, and a setting that cannot work with
    what was given (a grid too fine for --steps, the keep term without finishing steps, the first-estimate
    regression without the regression) is left out rather than refused."""
    from molediff.cli import build_parser
    from molediff.commands.distill import DMD_RECIPE, _dmd_recipe, student_config
    from molediff.runstate import EMA_MODEL
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=1, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)

    def config(*extra):
        args = build_parser("distill").parse_args(["distill", "--from", teacher, "--out", str(tmp_path / "s"), *extra])
        c = student_config(args)
        c.validate()
        return (c.distill_steps, c.distill_spacing, c.distill_keep, c.distill_regression, c.distill_regression_first, c.lr)

    assert config("--method", "dmd") == (10, "finish4", 10.0, 1.0, True, 2e-5) == \
        tuple(DMD_RECIPE[k] for k in ("distill_steps", "distill_spacing", "distill_keep", "distill_regression",
                                      "distill_regression_first", "lr"))
    assert config("--method", "dmd", "--steps", "8", "--lr", "1e-4", "--distill-keep", "100") == \
        (8, "finish4", 100.0, 1.0, True, 1e-4)
    assert config("--method", "dmd", "--steps", "4")[:3] == (4, "trailing", 0.0)  # finish4 needs 5 steps
    assert config("--method", "dmd", "--steps", "4", "--distill-spacing", "finish")[:3] == (4, "finish", 10.0)
    assert config("--method", "dmd", "--distill-spacing", "trailing")[:3] == (10, "trailing", 0.0)
    assert config("--method", "dmd", "--distill-regression", "0")[3:5] == (0.0, False)
    assert config("--method", "dmd", "--no-distill-regression-first")[3:5] == (1.0, False)
    # progressive distillation is untouched by it
    assert config()[1:] == ("trailing", 0.0, 0.0, False, 1e-4)
    # a conditional teacher's student trains without the regression (refused for conditional models)
    conditional = TrainConfig(diffusion=DiffusionConfig(conditions=["gap"], condition_stats={"gap": [0.2, 0.05, 0.1, 0.4]}))
    recipe = _dmd_recipe(conditional, 10, {})
    assert "distill_regression" not in recipe and "distill_regression_first" not in recipe and recipe["distill_keep"] == 10.0
    dataclasses.replace(conditional, distill_from="t.pt", distill_steps=10, distill_method="dmd", **recipe).validate()


def test_dmd_is_refused_where_it_cannot_work():
    with pytest.raises(UserError, match="--distill-method must be one of"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="gan").validate()
    with pytest.raises(UserError, match="needs --distill-from"):
        TrainConfig(distill_method="dmd").validate()


def test_a_dmd_student_of_a_fragment_teacher_learns_whole_molecules_and_refuses_fragments(tmp_path, monkeypatch):
    """A teacher trained to grow fragments (druglike is one) gets a distribution-matching student: its batches
    hold no fragment (its chain starts from noise with no atom held), and the student, which keeps the
    fixed-atom input without ever having read it set, refuses a fragment and names its teacher."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molediff import training
    from molediff.runstate import EMA_MODEL
    from molediff.sampling import MoleculeGenerator
    from tests.test_training import tiny

    frag_cfg = DiffusionConfig(charges=True, bonds=True, self_condition=True, fragments=0.5)
    training.train(tiny(max_steps=2, diffusion=frag_cfg, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)

    def no_fragments(*args, **kwargs):
        raise AssertionError("a distribution-matching batch drew fragments")

    monkeypatch.setattr(training, "random_fragments", no_fragments)
    training.train(tiny(max_steps=2, diffusion=frag_cfg, model=TINY, distill_from=teacher, distill_steps=4,
                        distill_method="dmd", eval_every_steps=0), tmp_path / "dmd", progress=False)
    gen = MoleculeGenerator.from_file(tmp_path / "dmd" / EMA_MODEL)
    assert len(list(gen.run(gen.request(2)))) == 2
    mol = Chem.AddHs(Chem.MolFromSmiles("CO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    with pytest.raises(UserError, match=f"does not grow fragments: grow them with its teacher \\({teacher}\\)"):
        gen.request(2, fragment=mol, n_atoms=9)


# ---------------------------------------------------------------- DMD's adversarial term (--distill-gan)

def test_the_discriminator_is_invariant_and_its_terms_train_whom_they_should():
    """One logit per molecule from the fake denoiser's features, unchanged by a rotation, reflection and
    translation of the positions; the discriminator's loss trains only its head, the student's adversarial term
    reaches the student through its sample and leaves the fake's weights alone, and a head that says "real" to
    everything makes that term small."""
    from molediff import distill
    from molediff.testing import random_isometry

    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    fake = build_network(TINY, d).double()
    disc = distill.Discriminator(TINY.hidden, TINY.pair_hidden, d.schedule.num_train_timesteps, width=16).double()
    x = d.encode(_set([5, 7, 6]).collate([0, 1, 2]))
    x = MolState(x.node.double(), x.pair.double(), x.graph, x.parts)
    t = torch.tensor([10, 300, 480])
    logits = disc(*distill.fake_features(d, fake, x, t), x.graph, t)
    assert logits.shape == (3,)
    Q, shift = random_isometry(reflect=True, seed=1)
    moved = MolState(torch.cat([x.node[:, :3] @ Q.T + shift, x.node[:, 3:]], dim=1), x.pair, x.graph, x.parts)
    torch.testing.assert_close(disc(*distill.fake_features(d, fake, moved, t), x.graph, t), logits)

    sample = MolState(x.node.clone().requires_grad_(True), x.pair.clone().requires_grad_(True), x.graph, x.parts)
    gen_loss = distill.gan_generator_loss(d, disc, fake, sample, torch.Generator().manual_seed(2))
    gen_loss.backward()
    assert float(sample.node.grad.abs().sum()) > 0 and float(sample.pair.grad.abs().sum()) > 0
    assert all(p.grad is None and p.requires_grad for p in fake.parameters())  # the fake keeps to its own loss
    for p in disc.parameters():
        p.grad = None
    out = distill.discriminator_loss(d, disc, fake, x, sample, torch.Generator().manual_seed(3))
    out["total"].backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in disc.parameters())
    assert all(p.grad is None for p in fake.parameters())
    assert 0.0 <= float(out["accuracy"]) <= 1.0
    with torch.no_grad():  # a head that says "real" loudly: the student has nothing left to gain
        disc.head[-1].bias.fill_(20.0)
    assert float(distill.gan_generator_loss(d, disc, fake, sample.detach(), torch.Generator().manual_seed(2)).detach()) < 1e-6


def test_a_discriminator_head_learns_to_tell_a_chemistry_surplus():
    """The head on frozen features learns what a student drifting from the data would show: molecules whose
    bonds are all read as double against the same molecules as encoded (at a low noise level), in a few hundred
    steps of its own optimiser, where a constant guess scores 0.5."""
    from molediff import distill

    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    fake = build_network(TINY, d)
    disc = distill.Discriminator(TINY.hidden, TINY.pair_hidden, d.schedule.num_train_timesteps, width=32)
    real = d.encode(_set([5, 7, 6, 5, 7, 6]).collate([0, 1, 2, 3, 4, 5]))
    assert [p.labels for p in real.parts if p.name == "bond"] == [("none", "single", "double", "triple")]
    pair = real.pair.clone()
    bonded = pair.argmax(1) > 0  # every written bond moved to the double-bond column
    pair[bonded] = torch.tensor([0.0, 0.0, 1.0, 0.0]) * pair[bonded].max(1, keepdim=True).values
    drifted = MolState(real.node, pair, real.graph, real.parts)
    assert not torch.equal(drifted.pair, real.pair)
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        out = distill.discriminator_loss(d, disc, fake, real, drifted, g)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
    accuracy = sum(float(distill.discriminator_loss(d, disc, fake, real, drifted, g)["accuracy"]) for _ in range(10)) / 10
    assert accuracy > 0.8, accuracy


def test_a_dmd_run_continued_with_the_adversarial_term_trains_and_keeps_its_discriminator(tmp_path, capsys):
    from molediff.checkpoint import safe_torch_load
    from molediff.cli import main as cli
    from molediff.runstate import CHECKPOINT, EMA_MODEL
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    run = tmp_path / "dmd"
    quiet = ["--no-progress", "--eval-every-steps", "0"]
    assert cli(["distill", "--from", teacher, "--method", "dmd", "--steps", "2", "--out", str(run), "--max-steps", "1",
                "--distill-regression", "0", *quiet]) == 0
    assert "disc" not in safe_torch_load(run / CHECKPOINT)
    assert cli(["distill", "--resume", "--out", str(run), "--max-steps", "2", "--distill-gan", "0.5", *quiet]) == 0
    state = safe_torch_load(run / CHECKPOINT)
    assert state["config"]["distill_gan"] == 0.5 and set(state) >= {"disc", "disc_optimizer"}
    first = {k: v.clone() for k, v in state["disc"].items()}
    assert cli(["distill", "--resume", "--out", str(run), "--max-steps", "3", *quiet]) == 0
    state = safe_torch_load(run / CHECKPOINT)
    assert state["step"] == 3 and any(not torch.equal(first[k], state["disc"][k]) for k in first)  # resumed and trained
    capsys.readouterr()
    # a run of the earlier discriminator (an EGNN read-out on raw states) continues with a fresh head, and says so
    state["disc"] = {"readout.head.0.weight": torch.zeros(2, 2)}
    torch.save(state, run / CHECKPOINT)
    assert cli(["distill", "--resume", "--out", str(run), "--max-steps", "4", *quiet]) == 0
    assert "discriminator is of an earlier form" in capsys.readouterr().out
    assert set(safe_torch_load(run / CHECKPOINT)["disc"]) == set(first)
    with pytest.raises(UserError, match="--distill-gan is a non-negative weight, used with --distill-method dmd"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_gan=0.1).validate()


def test_more_fake_updates_train_the_fake_denoiser_further_and_leave_the_students_step_alone(tmp_path):
    """``--distill-fake-updates K``: after the student's update the fake denoiser takes K steps (fresh levels and
    noise each) instead of one: from the same seed, one training step leaves the same student and optimiser
    state for the student, a different fake denoiser; the fake optimiser counts K steps."""
    from molediff.checkpoint import safe_torch_load
    from molediff.runstate import CHECKPOINT, EMA_MODEL
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    states = {}
    for k in (1, 3):
        train(tiny(max_steps=1, diffusion=JOINT_SC, model=TINY, distill_from=teacher, distill_steps=2, distill_method="dmd",
                   distill_fake_updates=k), tmp_path / f"dmd{k}", progress=False)
        states[k] = safe_torch_load(tmp_path / f"dmd{k}" / CHECKPOINT)
    one, three = states[1], states[3]
    assert all(torch.equal(one["model"][n], three["model"][n]) for n in one["model"])
    assert any(not torch.equal(one["fake"][n], three["fake"][n]) for n in one["fake"])
    steps = lambda s: {int(v["step"]) for v in s["fake_optimizer"]["state"].values()}  # noqa: E731
    assert steps(one) == {1} and steps(three) == {3}
    assert three["config"]["distill_fake_updates"] == 3
    with pytest.raises(UserError, match="--distill-fake-updates must be ≥ 1, used with --distill-method dmd"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_fake_updates=2).validate()
    with pytest.raises(UserError, match="--distill-fake-updates must be ≥ 1"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="dmd", distill_fake_updates=0).validate()


# ---------------------------------------------------------------- DMD's regression term (--distill-regression)

def test_teacher_pairs_are_the_teachers_deterministic_endpoints_and_the_regression_trains_only_the_student():
    """A pair is a prior noise and the teacher's DDIM η 0 endpoint from it (the same again from the same
    noise); the regression term is zero where the student's x̂_0 is the target, and its gradient reaches
    the student alone."""
    from molediff.diffusion.samplers import sample
    from molediff.distill import regression_loss, teacher_pairs
    from molediff.guidance import sampling_denoiser

    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    teacher, student = build_network(TINY, d), build_network(TINY, d)
    graph = d.encode(_set([5, 7, 6]).collate([0, 1, 2])).graph
    pairs = teacher_pairs(d, teacher, graph, 3, torch.Generator().manual_seed(1))
    assert pairs["z_node"].shape == pairs["x_node"].shape == (18, d.node_width) and pairs["valid"].shape == (3,)
    z = MolState(pairs["z_node"], pairs["z_pair"], graph, d.parts)
    with torch.no_grad():
        again = sample(sampling_denoiser(d, teacher, None, 1.0, None), z, d.schedule, num_steps=3, eta=0.0)
    torch.testing.assert_close(again.node, pairs["x_node"])
    torch.testing.assert_close(again.pair, pairs["x_pair"])
    # one student step: its x̂_0 from the noise at the grid's only level is what it is regressed with
    with torch.no_grad():
        own = d.predict(student, z, torch.full((3,), d.schedule.set_timesteps(1).tolist()[0]))[0]
    assert float(regression_loss(d, student, z, own, 1, torch.Generator().manual_seed(2)).detach()) < 1e-10
    target = MolState(pairs["x_node"], pairs["x_pair"], graph, d.parts)
    loss = regression_loss(d, student, z, target, 3, torch.Generator().manual_seed(2))
    assert float(loss) > 0
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_the_regression_on_the_first_estimate_reads_the_students_x0_from_the_pure_noise():
    """``first``: whatever the student's steps and the generator, the term compares its x̂_0 at the grid's
    first level, from the pair's noise and without a self-conditioning estimate, with the target."""
    from molediff.distill import regression_loss

    torch.manual_seed(0)
    d = MolecularDiffusion(JOINT_SC)
    student = build_network(TINY, d)
    graph = d.encode(_set([5, 7, 6]).collate([0, 1, 2])).graph
    z = d.prior(graph, torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = d.predict(student, z, torch.full((3,), d.schedule.set_timesteps(8).tolist()[0]))[0]
    for seed in range(4):  # the whole-chain form would draw a later step for most of these
        loss = regression_loss(d, student, z, own, 8, torch.Generator().manual_seed(seed), first=True)
        assert float(loss.detach()) < 1e-10
    chain = [float(regression_loss(d, student, z, own, 8, torch.Generator().manual_seed(s)).detach()) for s in range(4)]
    assert max(chain) > 1e-6


def test_a_dmd_run_with_the_regression_term_draws_its_pairs_once_and_trains_on_the_valid_ones(tmp_path, capsys, monkeypatch):
    from molediff import distill
    from molediff.checkpoint import safe_torch_load
    from molediff.cli import main as cli
    from molediff.runstate import CHECKPOINT, EMA_MODEL
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    run = tmp_path / "dmd"
    quiet = ["--no-progress", "--eval-every-steps", "0"]
    args = ["distill", "--from", teacher, "--method", "dmd", "--steps", "2", "--out", str(run), "--max-steps", "1",
            "--distill-regression", "1", "--distill-pairs", "3", "--no-distill-regression-first", *quiet]
    # an untrained teacher's endpoints fail the honest rule: nothing to regress on, said plainly
    assert cli(args) == 2
    assert "no teacher pair passed the honest rule" in capsys.readouterr().err
    chunk_path = run / "teacher_pairs" / "chunk_0000.pt"
    chunk = torch.load(chunk_path, weights_only=True)
    assert chunk["ptr"].tolist()[-1] == chunk["z_node"].shape[0] and len(chunk["valid"]) == 3
    # as if the teacher's endpoints were valid: the run trains on them, and does not draw them again
    chunk["valid"][:] = True
    torch.save(chunk, chunk_path)
    seen = []

    def counted(diffusion, student, z, target, steps, generator=None, first=False, **kw):
        seen.append((z.num_graphs, steps, first))
        return original(diffusion, student, z, target, steps, generator, first, **kw)

    original = distill.regression_loss
    monkeypatch.setattr(distill, "regression_loss", counted)
    assert cli(["distill", "--resume", "--out", str(run), "--max-steps", "2", *quiet]) == 0
    assert "teacher pairs" not in capsys.readouterr().err
    assert torch.equal(torch.load(chunk_path, weights_only=True)["z_node"], chunk["z_node"])
    assert safe_torch_load(run / CHECKPOINT)["step"] == 2
    assert seen == [(3, 2, False), (3, 2, False)]  # every step, on the chunk's three pairs, in the student's two steps
    # continued on the first estimate only (a recipe setting a resume may change)
    assert cli(["distill", "--resume", "--out", str(run), "--max-steps", "3", "--distill-regression-first", *quiet]) == 0
    assert seen[-1] == (3, 2, True)
    with pytest.raises(UserError, match="--distill-regression is a non-negative weight, used with --distill-method dmd"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_regression=0.5).validate()
    with pytest.raises(UserError, match="--distill-regression-first needs --distill-regression"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="dmd", distill_regression_first=True).validate()
    with pytest.raises(UserError, match="not for a conditional model"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="dmd", distill_regression=0.5,
                    diffusion=DiffusionConfig(conditions=["gap"], condition_stats={"gap": [0.2, 0.05, 0.1, 0.4]})).validate()


def test_the_bundled_few_step_student_samples_in_its_own_steps_and_redraws_failures_from_noise():
    """``qm9-fast``: 10 steps on the finish4 grid at η 1, noise 0.6, up to 3 restarts from noise unless told
    otherwise; the molecules it writes pass the honest rule more often than its raw draws (some are drawn again)."""
    from molediff.sampling import SampleStats, load_pretrained

    gen = load_pretrained(model="qm9-fast")
    req = gen.request(16)
    assert (req.steps, req.spacing, req.eta, req.noise_scale, req.restarts, req.restart_from) == (10, "finish4", 1.0, 0.6, 3, "noise")
    assert gen.request(16, restarts=0).restarts == 0
    stats = SampleStats()
    got = list(gen.sample_arrays(16, seed=0, stats=stats))
    assert len(got) == 16 and all("restarts" in info for _, _, info in got)
    assert stats.restarted > 0  # about a sixth of its raw draws come in pieces: some were drawn again


# ---------------------------------------------------------------- the student's own finishing steps (--distill-spacing finish, --distill-keep)

def test_the_keep_term_regresses_the_students_finishing_steps_on_the_teachers_estimate():
    """At a finishing step of the "finish" grid the term is the student's x̂_0 against the teacher's of the same
    state: zero while the student is the teacher, positive and reaching the student alone once they differ;
    at a coarse step it does not run (NaN in the figures, nothing in the total)."""
    from molediff.distill import KEEP_LEVEL, dmd_generator_loss

    d, teacher, student, fake, graph = _copies_of_a_teacher()
    grid = d.schedule.set_timesteps(4, "finish").tolist()
    T = d.schedule.num_train_timesteps
    assert [t <= KEEP_LEVEL * T for t in grid] == [False, False, True, True]

    def run(seed):
        return dmd_generator_loss(d, student, teacher, fake, graph, steps=4, generator=torch.Generator().manual_seed(seed),
                                  spacing="finish", keep_weight=2.0)

    outs = {int(o["t"]): o for o in (run(seed) for seed in range(16))}
    assert set(outs) == set(grid)  # the chain stops on the finish grid's levels
    assert all(float(outs[t]["keep"]) == 0.0 for t in grid[2:]) and all(torch.isnan(outs[t]["keep"]) for t in grid[:2])
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seed = next(s for s in range(32) if int(run(s)["t"]) in grid[2:])
    out = run(seed)
    keep, dmd = float(out["keep"]), float(out["dmd"])
    assert keep > 0 and float(out["total"].detach()) == pytest.approx(dmd + 2.0 * keep, rel=1e-5)
    out["total"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    assert all(p.grad is None for net in (teacher, fake) for p in net.parameters())


def test_a_higher_keep_level_reaches_the_students_coarse_steps():
    """``keep_level`` (``--distill-keep-level``) moves where the term acts: at 0.6 T it runs at the finish grid's
    coarse step t = 499 too, and at its first step (t = 999) still not; a level the trainer cannot use is refused."""
    from molediff.distill import dmd_generator_loss

    d, teacher, student, fake, graph = _copies_of_a_teacher()
    grid = d.schedule.set_timesteps(4, "finish").tolist()
    assert grid[:2] == [999, 499]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    outs = {int(o["t"]): o for o in (dmd_generator_loss(d, student, teacher, fake, graph, steps=4, spacing="finish",
                                                         generator=torch.Generator().manual_seed(seed), keep_weight=2.0,
                                                         keep_level=0.6) for seed in range(16))}
    assert set(outs) == set(grid)
    assert torch.isnan(outs[999]["keep"]) and all(float(outs[t]["keep"]) > 0 for t in grid[1:])
    with pytest.raises(UserError, match="--distill-keep-level must be in"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="dmd", distill_spacing="finish", distill_keep=1.0,
                    distill_keep_level=0.0).validate()
    with pytest.raises(UserError, match="--distill-keep-level applies with --distill-keep"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="dmd", distill_keep_level=0.3).validate()
    # a level that reaches a trailing grid's last step lets the term run without a finish grid
    TrainConfig(distill_from="t.pt", distill_steps=8, distill_method="dmd", distill_keep=1.0, distill_keep_level=0.2).validate()


def test_a_finish_grid_student_continued_from_another_student_samples_on_its_grid(tmp_path, capsys):
    """``molediff distill --init-from STUDENT --distill-spacing finish --distill-keep W``: the new student starts
    from the given file (its steps carry on), trains with the keep term, and its file samples on the finish
    grid unless told otherwise; options that cannot work are refused with the reason."""
    from molediff.checkpoint import load_model_file
    from molediff.cli import main as cli
    from molediff.runstate import EMA_MODEL
    from molediff.sampling import MoleculeGenerator
    from molediff.training import train
    from tests.test_training import tiny

    train(tiny(max_steps=2, diffusion=JOINT_SC, model=TINY), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / EMA_MODEL)
    quiet = ["--no-progress", "--eval-every-steps", "0"]
    first = tmp_path / "first"
    quiet += ["--distill-regression", "0"]  # an untrained teacher: no pairs pass the honest rule
    assert cli(["distill", "--from", teacher, "--method", "dmd", "--steps", "4", "--out", str(first), "--max-steps", "2", *quiet]) == 0
    run = tmp_path / "finish"
    assert cli(["distill", "--from", teacher, "--method", "dmd", "--steps", "4", "--out", str(run), "--max-steps", "3",
                "--init-from", str(first / EMA_MODEL), "--distill-spacing", "finish", "--distill-keep", "1", *quiet]) == 0
    _, cfg, meta = load_model_file(run / EMA_MODEL)
    assert (cfg.distill_spacing, cfg.distill_keep, meta["default_spacing"], meta["step"]) == ("finish", 1.0, "finish", 3)
    assert "default_spacing" not in load_model_file(first / EMA_MODEL)[2]
    gen = MoleculeGenerator.from_file(run / EMA_MODEL)
    req = gen.request(2)
    assert (req.steps, req.spacing) == (4, "finish") and gen.request(2, spacing="trailing").spacing == "trailing"
    assert "finish" in gen.sampler_tag(req.sampler, req.steps, req.eta, req.noise_scale, req.spacing)
    assert len(list(gen.run(req))) == 2
    with pytest.raises(UserError, match="at most"):
        gen.request(2, steps=900)
    capsys.readouterr()
    assert cli(["distill", "--from", teacher, "--method", "dmd", "--out", str(tmp_path / "x"), "--init-from", "nope.pt"]) == 2
    assert "--init-from 'nope.pt': no such file" in capsys.readouterr().err
    with pytest.raises(UserError, match="--distill-spacing applies to --distill-method dmd"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_spacing="finish").validate()
    with pytest.raises(UserError, match="--distill-spacing must be one of"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_method="dmd", distill_spacing="evenly").validate()
    with pytest.raises(UserError, match="--distill-spacing finish: .*at least 3 steps"):
        TrainConfig(distill_from="t.pt", distill_steps=2, distill_method="dmd", distill_spacing="finish").validate()
    with pytest.raises(UserError, match="--distill-keep is a non-negative weight"):
        TrainConfig(distill_from="t.pt", distill_steps=4, distill_keep=1.0).validate()
    with pytest.raises(UserError, match="--distill-keep acts at the student's steps at or below .* use --distill-spacing finish"):
        TrainConfig(distill_from="t.pt", distill_steps=8, distill_method="dmd", distill_keep=1.0).validate()
