import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests share 2 cores with whatever else runs: keep torch to 1-2 threads for stable timings."""
    torch.set_num_threads(2)
    yield
