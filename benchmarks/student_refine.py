"""A few-step student's molecules finished by its teacher (issue 38): how much of a student's gap to its
teacher is fine geometry that a few teacher steps at low noise repair, and how much is decided early?

Each molecule is sampled by the student's own chain (``--steps`` on its file's grid, DDIM η 1, noise
``--noise``, default 1); its final x̂_0 is then noised to level ``t_K``, the K-th last of the teacher's ``--grid``-step
DDIM grid, and the teacher takes the K remaining steps of that grid (η 1, ``--refine-noise``). Network
evaluations per molecule: steps + K (K = 0: the student alone). ``--restarts R``: the student's own
local restarts (:mod:`molediff.restarts`, from level 0.4 in its grid, or whole from noise with
``--restart-from noise``) before the teacher's steps, on the molecules that fail the honest rule; their
evaluations are counted per molecule. Rows are scored as
``benchmarks/qm9_quality.py`` scores them (the lookup view and the honest model-bond view), and the
rows of ``--coarse teacher`` run the same recipe with the teacher in the student's place (does the
student add anything over the teacher's own coarse steps?).

    python benchmarks/student_refine.py --student RUN/ema_model.pt --levels 0,2,4 --n 1000 \\
        --json benchmarks/results/qm9_student_refine.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import MethodType

import torch
from qm9_quality import score  # the one scoring rule of the QM9 rows (a sibling, as learning_curves.py reads it)

from molediff.atomic import atomic_write
from molediff.config import RESTART_FROM
from molediff.diffusion.samplers import ddim_sample
from molediff.guidance import sampling_denoiser
from molediff.sampling import MoleculeGenerator, load_pretrained

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("model_molecule_stability", "model_connected_validity", "atom_stability", "molecule_stability", "validity",
           "novelty", "sample_seconds")


def refine_level(teacher: MoleculeGenerator, grid: int, levels: int) -> int:
    """t_K: the ``levels``-th last level of ``teacher``'s ``grid``-step DDIM grid, where its steps begin."""
    return int(teacher.diffusion.schedule.set_timesteps(grid).tolist()[-levels])


def refined(gen: MoleculeGenerator, teacher: MoleculeGenerator, levels: int, grid: int, refine_noise: float) -> None:
    """Make ``gen`` (its own diffusion object) finish every molecule with ``teacher``'s last ``levels``
    levels of its ``grid``-step DDIM grid (none: unchanged)."""
    if not levels:
        return
    diffusion = gen.diffusion
    t_start = refine_level(teacher, grid, levels)
    plain = type(diffusion).sample

    def sample(self, net, num_atoms, *args, generator=None, **kw):
        last = {}
        decode = self.decode

        def capture(x):  # the clean state the student's sampling ends with (after its restarts): decoded last
            last["x"] = x
            return decode(x)
        self.decode = capture
        try:
            coarse = plain(self, net, num_atoms, *args, generator=generator, **kw)
        finally:
            del self.decode
        x0 = last["x"]
        t = torch.full((x0.graph.num_graphs,), t_start, dtype=torch.long)
        x = teacher.diffusion.add_noise(x0, x0.noise_like(generator), t)
        model = sampling_denoiser(teacher.diffusion, teacher.net, None, 1.0, None)
        x = ddim_sample(model, x, teacher.diffusion.schedule, num_steps=grid, eta=1.0, generator=generator,
                        noise_scale=refine_noise, start=t_start)
        out = teacher.diffusion.decode(x)
        if hasattr(coarse, "restarted"):  # the rounds each molecule's restarts ran (an SD property of the record)
            out.restarted = coarse.restarted
        return out
    diffusion.sample = MethodType(sample, diffusion)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="the student: a bundled model name (qm9-fast) or a model file (molediff distill --method dmd)")
    ap.add_argument("--teacher", default="qm9-joint", help="bundled model name or model file (default qm9-joint)")
    ap.add_argument("--coarse", choices=("student", "teacher"), default="student",
                    help="who samples the first --steps steps (teacher: the control)")
    ap.add_argument("--steps", type=int, default=8, help="the coarse chain's steps (the student's own)")
    ap.add_argument("--levels", default="0,2,4", help="comma-separated K: the teacher's last K grid levels")
    ap.add_argument("--grid", type=int, default=75, help="the teacher's DDIM grid (steps over the whole range)")
    ap.add_argument("--noise", type=float, default=1.0, help="noise scale of the coarse chain (default 1, the published "
                                                             "protocol's)")
    ap.add_argument("--refine-noise", type=float, default=1.0, help="noise scale of the teacher's steps")
    ap.add_argument("--restarts", default="0", help="comma-separated rounds of the student's local restarts (0: none)")
    ap.add_argument("--restart-from", default=None, choices=RESTART_FROM,
                    help="what the student's restarts draw again (molediff sample --restart-from; default: the file's own)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=str(RESULTS / "qm9_student_refine.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = MoleculeGenerator.from_file(a.teacher) if Path(a.teacher).exists() else load_pretrained(model=a.teacher)
    rows = []
    for restarts in [int(v) for v in a.restarts.split(",")]:
        for levels in [int(v) for v in a.levels.split(",")]:
            coarse_model = a.student if a.coarse == "student" else a.teacher
            gen = MoleculeGenerator.from_file(coarse_model) if Path(coarse_model).exists() else load_pretrained(model=coarse_model)
            refined(gen, teacher, levels, a.grid, a.refine_noise)
            # the coarse chain on the student's own grid (a "finish" student's last steps are its own finishing levels)
            row = score(gen, a.n, a.steps, 1.0, a.noise, seed=a.seed, spacing=gen.default_spacing, restarts=restarts,
                        restart_from=a.restart_from if restarts else None)
            # the coarse network's evaluations per molecule, counted (restarts run on the failing ones only),
            # and the teacher's K on every molecule
            coarse = row["network_evaluations"] or a.steps
            row.update(student=a.student, coarse=a.coarse, teacher=a.teacher, refine_levels=levels, grid=a.grid,
                       refine_from=refine_level(teacher, a.grid, levels) if levels else None,
                       refine_noise=a.refine_noise, restarts=restarts, evaluations=round(coarse + levels, 2))
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("coarse", "restarts", "refine_levels", "refine_from", "evaluations")
                              + COLUMNS}), flush=True)
            atomic_write(a.json, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
