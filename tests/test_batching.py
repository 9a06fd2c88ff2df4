"""Batches by atom pairs (--batch-pairs): every molecule once an epoch, pairs within budget, the same
batches for the same step (exact resume), and a run trains with it."""

import numpy as np
import pytest

from molediff.training import EpochSampler


@pytest.mark.parametrize("budget", [500, 20_000])
def test_pair_budget_batches_cover_each_epoch_within_budget(budget):
    sizes = np.random.default_rng(0).integers(1, 121, 400)  # 1..120 atoms
    pairs = sizes * (sizes - 1) // 2
    sampler = EpochSampler(len(sizes), 64, seed=3, sizes=sizes, pair_budget=budget)
    assert sampler.steps_per_epoch == -(-int(np.clip(pairs, 1, budget).sum()) // budget)
    for epoch in range(2):
        seen = []
        for i in range(sampler.steps_per_epoch):
            e, index = sampler.batch(epoch * sampler.steps_per_epoch + i)
            assert e == epoch and len(index) >= 1
            # within budget + one molecule's pairs (a molecule above the budget alone)
            assert pairs[index].sum() <= budget + pairs[index].max()
            seen += index.tolist()
        assert sorted(seen) == list(range(len(sizes)))  # every molecule exactly once an epoch
    again = EpochSampler(len(sizes), 64, seed=3, sizes=sizes, pair_budget=budget)
    np.testing.assert_array_equal(again.batch(sampler.steps_per_epoch + 5)[1], sampler.batch(sampler.steps_per_epoch + 5)[1])


def test_a_run_trains_with_a_pair_budget(tmp_path):
    from molediff.config import ModelConfig, TrainConfig
    from molediff.training import train

    cfg = TrainConfig(model=ModelConfig(hidden=16, layers=2), batch_pairs=2000, valid_molecules=32, eval_every_steps=0,
                      eval_samples=0, threads=1, checkpoint_minutes=100.0, max_steps=3)
    out = train(cfg, tmp_path / "run", progress=False)
    assert out["step"] == 3
