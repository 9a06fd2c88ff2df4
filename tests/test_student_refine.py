"""benchmarks/student_refine.py: a student's chain finished by its teacher's last grid levels."""

import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def refine():
    return load_script("benchmarks/student_refine.py")


def _calls(net):
    count = [0]
    return count, net.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))


def test_the_teacher_takes_the_last_levels_and_writes_the_molecules(refine):
    from molediff.sampling import load_pretrained

    student, teacher = load_pretrained(model="qm9-joint"), load_pretrained(model="qm9-joint")
    s_calls, s_hook = _calls(student.net)
    t_calls, t_hook = _calls(teacher.net)
    try:
        plain = student.sample(2, steps=3, seed=0, batch_size=2, n_atoms=5)
        assert (s_calls[0], t_calls[0]) == (3, 0)
        refine.refined(student, teacher, 0, 75, 1.0)  # K = 0: unchanged
        assert [m.GetNumAtoms() for m in student.sample(2, steps=3, seed=0, batch_size=2, n_atoms=5)] == \
            [m.GetNumAtoms() for m in plain]
        s_calls[0] = 0
        refine.refined(student, teacher, 2, 75, 1.0)
        out = student.sample(2, steps=3, seed=0, batch_size=2, n_atoms=5)
        assert (s_calls[0], t_calls[0]) == (3, 2)  # the student's 3 steps, then the teacher's last 2 levels
        assert len(out) == 2 and all(m.GetNumAtoms() == 5 for m in out)
        moved = [torch.as_tensor(a.GetConformer().GetPositions()) - torch.as_tensor(b.GetConformer().GetPositions())
                 for a, b in zip(out, plain)]
        assert max(float(d.abs().max()) for d in moved) > 1e-3  # the teacher's steps changed the geometry
    finally:
        s_hook.remove()
        t_hook.remove()


def test_the_teacher_finishes_the_state_the_students_restarts_leave(refine):
    """With the student's local restarts, the teacher's levels start from the molecules as restarted (its
    final clean state), and the diffusion object is left as it was (no captured decode)."""
    from molediff.sampling import SampleStats, load_pretrained

    student, teacher = load_pretrained(model="qm9-joint"), load_pretrained(model="qm9-joint")
    refine.refined(student, teacher, 2, 75, 1.0)
    seen, noised = [], teacher.diffusion.add_noise

    def add_noise(x0, noise, t):  # the state the teacher's levels start from
        seen.append(x0)
        return noised(x0, noise, t)
    teacher.diffusion.add_noise = add_noise
    s_calls, s_hook = _calls(student.net)
    try:
        # 2 coarse steps of a 75-step model fail the honest rule: restarts run, on the restarted state
        stats = SampleStats()
        out = list(student.sample_arrays(4, steps=2, seed=0, batch_size=4, n_atoms=9, restarts=1, stats=stats))
    finally:
        s_hook.remove()
    assert len(out) == 4 and len(seen) == 1 and seen[0].num_graphs == 4
    assert s_calls[0] > 2  # the restart round ran after the student's two steps
    assert "decode" not in vars(student.diffusion)
    assert stats.restarted > 0 and sum(info.get("restarts", 0) for _, _, info in out) > 0
