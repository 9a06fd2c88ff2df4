"""Where does a few-step student lose its quality: in the high-noise steps or the low-noise ones?

A diagnostic, not a sampler molediff ships: the student runs its own deterministic grid down to level
``--switch`` (of T), and below it the teacher takes over, on its own finer grid and with its own network
(the self-conditioning estimate carried across). Everything else is ``benchmarks/druglike_quality.py``:
the same sampling (restarts included: their grid is split the same way), the same scoring, the same JSON.
Compare a row at ``--switch S`` with ``--switch -1`` (the student alone, the same seed and n):

* what the split recovers was lost in the student's low-noise steps (geometry: strain, stability);
* what it does not was decided above ``S`` (chemistry: SA, ring sizes, elements).

    python benchmarks/student_teacher_split.py --teacher druglike --switch 200 -- \\
        --checkpoint STUDENT.pt --train MOSES3D --n 200 --seed 1 --restarts 6 --restart-rings --out OUT.json

Network evaluations per molecule of the main pass: the student's grid points above S plus the teacher's
at or below it (printed at the end). The patch is on :meth:`NoiseSchedule.set_timesteps` (the grid of the
student's step count only) and :meth:`MolecularDiffusion.predict` (the network, by level), in this
process: run it with ``--jobs 1``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the teacher: a bundled model's name or a model file")
    ap.add_argument("--switch", type=int, required=True,
                    help="the level (0..T-1) at and below which the teacher runs; -1: the student alone")
    ap.add_argument("--teacher-steps", type=int, default=None, help="the teacher's grid (default: its own steps)")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the arguments of druglike_quality.py")
    args = ap.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if "--jobs" in rest and rest[rest.index("--jobs") + 1] != "1":
        ap.error("the patch lives in this process: leave --jobs at 1")

    from molediff.checkpoint import load_model_file
    from molediff.diffusion.schedule import NoiseSchedule
    from molediff.molecular import MolecularDiffusion
    from molediff.sampling import MoleculeGenerator, bundled_model_path

    teacher_file = Path(args.teacher) if Path(args.teacher).is_file() else bundled_model_path(args.teacher)
    teacher = MoleculeGenerator.from_file(teacher_file)
    teacher_steps = args.teacher_steps or teacher.default_steps
    student_file = rest[rest.index("--checkpoint") + 1] if "--checkpoint" in rest else None
    if student_file is None:
        ap.error("give the student with --checkpoint after --")
    student_steps = int(load_model_file(student_file)[2].get("default_steps") or 0)
    if "--steps" in rest:
        student_steps = int(rest[rest.index("--steps") + 1])
    if not student_steps or student_steps == teacher_steps:
        ap.error("the student's steps must be known (its file's default_steps or --steps) and differ from the teacher's")

    grid_of, predict = NoiseSchedule.set_timesteps, MolecularDiffusion.predict
    calls = {"student": 0, "teacher": 0}

    def split_grid(self, num_inference_steps, spacing="trailing"):
        grid = grid_of(self, num_inference_steps, spacing=spacing)
        if num_inference_steps != student_steps or args.switch < 0:
            return grid
        fine = grid_of(self, teacher_steps, spacing=spacing)
        return torch.cat([grid[grid > args.switch], fine[fine <= args.switch]])

    def split_predict(self, net, x_t, t, *a, **k):
        use_teacher = args.switch >= 0 and int(t.max()) <= args.switch
        calls["teacher" if use_teacher else "student"] += 1
        return predict(self, teacher.net if use_teacher else net, x_t, t, *a, **k)

    NoiseSchedule.set_timesteps, MolecularDiffusion.predict = split_grid, split_predict
    evals = len(split_grid(teacher.diffusion.schedule, student_steps))  # the main pass's grid, as sampled
    import druglike_quality

    sys.argv = ["druglike_quality.py", *rest]
    rc = druglike_quality.main()
    print(f"switch {args.switch}: {evals} network evaluations per molecule in the main pass "
          f"(batched network calls: student {calls['student']}, teacher {calls['teacher']})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
