"""Cache files carry checksums: a truncated or corrupt one is logged and recomputed, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from objectives import TrialSpec, reference
from wemem.assets import cache_path, prepare_assets

ASSET_FILES = ["split.pt", "pretrained.pt", "pretrained_accuracy.json", "memscores.csv"]


@pytest.fixture(scope="module")
def prepared(tiny_config, tiny_pruning, tmp_path_factory):
    """A complete cache (assets and the reference) to copy and damage."""
    cache = tmp_path_factory.mktemp("intact")
    assets = prepare_assets(tiny_config, cache)
    spec = TrialSpec(tiny_config, tiny_pruning, ("conf",), cache_dir=str(cache))
    return cache, assets, reference(spec, assets)


def damaged_copy(cache: Path, config, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    matches = list(cache_path(config, copy).glob(name))
    assert len(matches) == 1
    path = matches[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a crash or a partial copy
    return path


@pytest.mark.parametrize("name", ASSET_FILES)
def test_a_truncated_asset_file_is_recomputed(prepared, tiny_config, tmp_path: Path, name: str) -> None:
    cache, intact, _ = prepared
    path = damaged_copy(cache, tiny_config, tmp_path, name)
    messages: list[str] = []
    assets = prepare_assets(tiny_config, tmp_path / "cache", log=messages.append)
    assert any(str(path) in m and "recomputing" in m for m in messages), messages
    assert assets.fingerprint == intact.fingerprint  # recomputed to the same content (seeded, serial)
    messages.clear()
    prepare_assets(tiny_config, tmp_path / "cache", log=messages.append)  # and the rewritten file verifies
    assert not any("recomputing" in m for m in messages), messages


def test_a_truncated_reference_is_recomputed(prepared, tiny_config, tiny_pruning, tmp_path: Path) -> None:
    cache, assets, intact = prepared
    path = damaged_copy(cache, tiny_config, tmp_path, "reference-*.json")
    messages: list[str] = []
    spec = TrialSpec(tiny_config, tiny_pruning, ("conf",), cache_dir=str(tmp_path / "cache"))
    again = reference(spec, assets, log=messages.append)
    assert any(str(path) in m and "recomputing" in m for m in messages), messages
    assert (again.utility, again.privacy) == (intact.utility, intact.privacy)


def test_a_file_without_its_checksum_is_not_trusted(prepared, tiny_config, tmp_path: Path) -> None:
    cache, intact, _ = prepared
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    (cache_path(tiny_config, copy) / "split.pt.sha256").unlink()
    messages: list[str] = []
    assert prepare_assets(tiny_config, copy, log=messages.append).fingerprint == intact.fingerprint
    assert any("split.pt" in m and "no checksum" in m for m in messages), messages
