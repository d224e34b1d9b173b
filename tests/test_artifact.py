"""The deployable artifact (wemem.artifact): folding, safetensors dense and compact, ONNX checked by onnxruntime."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wemem.artifact import (
    ONNX_TOLERANCE,
    ArtifactMeta,
    check_onnx,
    export_onnx,
    fold_masks,
    load_safetensors,
    load_sparse,
    measured_sparsity,
    onnx_outputs,
    save_safetensors,
    save_sparse,
)
from wemem.defenses import Setting
from wemem.errors import WememError
from wemem.models import build_model, prunable_parameters

SHAPE, CLASSES = (20,), 3


def pruned(name: str, shape: tuple[int, ...], sparsity: float) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A built-in model and masks pruning ``sparsity`` of each prunable weight at random (the engine's magnitude
    order takes 10 s on resnet18's 11M weights; folding and exporting do not depend on which entries go)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(name, shape, CLASSES)
    masks = {k: torch.rand(p.shape, generator=generator) >= sparsity for k, p in prunable_parameters(model).items()}
    return model, masks


def meta_of(model: nn.Module, name: str = "columnfc", shape: tuple[int, ...] = SHAPE) -> ArtifactMeta:
    state = model.state_dict()
    return ArtifactMeta(
        model=name,
        dataset="location",
        input_shape=shape,
        num_classes=CLASSES,
        sparsity=measured_sparsity(state, prunable_parameters(model)),
        setting=Setting("rsw", {"order": "l2h", "width_fraction": 0.22, "stride_fraction": 0.022}),
        study="quickstart",
        trial=7,
    )


def test_folding_zeroes_every_masked_weight_and_keeps_every_other_bit():
    model, masks = pruned("columnfc", SHAPE, 0.7)
    state = model.state_dict()  # its pruned entries are not zero yet: folding must zero them
    folded = fold_masks(state, masks)
    for name, tensor in folded.items():
        if name in masks:
            assert torch.all(tensor[~masks[name]] == 0.0)
            assert not torch.signbit(tensor[~masks[name]]).any()  # +0.0, never -0.0
            assert torch.equal(tensor[masks[name]].view(torch.int32), state[name][masks[name]].view(torch.int32))
        else:
            assert tensor is state[name]  # biases and the unprunable output layer: untouched
    assert {"fc1.weight", "fc2.weight"} == set(masks)


def test_meta_reads_back_from_its_strings():
    model, _ = pruned("columnfc", SHAPE, 0.5)
    meta = meta_of(model)
    strings = meta.to_strings()
    assert all(isinstance(v, str) for v in strings.values())
    assert ArtifactMeta.from_strings(strings) == meta
    bare = ArtifactMeta("columnfc", "location", SHAPE, CLASSES, 0.5, None)
    assert ArtifactMeta.from_strings(bare.to_strings()) == bare
    with pytest.raises(WememError, match="version"):
        ArtifactMeta.from_strings({**strings, "version": "2"}, "f.safetensors")


def test_safetensors_round_trip(tmp_path: Path):
    model, masks = pruned("columnfc", SHAPE, 0.7)
    folded, meta = fold_masks(model.state_dict(), masks), meta_of(model)
    save_safetensors(tmp_path / "m.safetensors", folded, meta)
    state, read = load_safetensors(tmp_path / "m.safetensors")
    assert read == meta and set(state) == set(folded)
    assert all(torch.equal(state[k], folded[k]) for k in folded)


@pytest.mark.parametrize(
    "content, looks",
    [
        (None, "zip archive"),  # torch.save of a state_dict: a pickle inside a zip
        (pickle.dumps({"w": [1.0]}), "pickle"),
        (b"weights = 1\n", "not a safetensors"),
    ],
)
def test_a_file_that_is_not_safetensors_is_refused_unread(tmp_path: Path, content: bytes | None, looks: str):
    path = tmp_path / "model.safetensors"
    if content is None:
        torch.save({"w": torch.ones(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(WememError, match=f"{path}.*{looks}.*never read as one"):
        load_safetensors(path)
    with pytest.raises(WememError, match="never read as one"):
        load_sparse(path)


def test_a_pickle_named_safetensors_runs_no_code(tmp_path: Path):
    """The payload would create a file when unpickled; loading refuses it and the file never appears."""
    planted = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (planted,))

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(WememError, match="pickle"):
        load_safetensors(path)
    assert not planted.exists()


def test_a_truncated_file_is_refused(tmp_path: Path):
    model, masks = pruned("columnfc", SHAPE, 0.7)
    path = tmp_path / "m.safetensors"
    save_safetensors(path, fold_masks(model.state_dict(), masks), meta_of(model))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WememError, match="cut short or damaged"):
        load_safetensors(path)


def test_the_compact_form_reads_back_dense_and_is_smaller_at_70_percent(tmp_path: Path):
    model, masks = pruned("columnfc", (446,), 0.7)  # the width of Location, as the quickstart prunes it
    folded, meta = fold_masks(model.state_dict(), masks), meta_of(model, shape=(446,))
    dense, compact = tmp_path / "m.safetensors", tmp_path / "m.sparse.safetensors"
    save_safetensors(dense, folded, meta)
    save_sparse(compact, folded, meta)
    state = load_sparse(compact)
    assert set(state) == set(folded)
    assert all(torch.equal(state[k], folded[k]) and state[k].dtype == folded[k].dtype for k in folded)
    sizes = dense.stat().st_size, compact.stat().st_size
    # 0.7 pruned of the prunable weights: 4 bytes an entry dense, (1 - 0.7) * 4 + 1/8 compact
    assert sizes[1] < 0.45 * sizes[0], f"dense {sizes[0]} bytes, compact {sizes[1]} bytes"


def test_a_compact_file_with_a_missing_part_is_refused(tmp_path: Path):
    from safetensors.torch import load_file, save_file

    model, masks = pruned("columnfc", SHAPE, 0.7)
    path = tmp_path / "m.sparse.safetensors"
    save_sparse(path, fold_masks(model.state_dict(), masks), meta_of(model))
    tensors = load_file(path)
    del tensors["fc1.weight.__values__"]
    save_file(tensors, path)
    with pytest.raises(WememError, match=r"fc1.weight are damaged \(no __values__\)"):
        load_sparse(path)


@pytest.mark.parametrize("name, shape", [("columnfc", SHAPE), ("resnet18", (3, 8, 8))])
def test_onnx_runs_in_onnxruntime_with_any_batch_and_matches_torch(tmp_path: Path, name: str, shape: tuple):
    model, masks = pruned(name, shape, 0.7)
    model.load_state_dict(fold_masks(model.state_dict(), masks))
    model.eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, shape, path, meta_of(model, name, shape))
    rows = np.random.default_rng(0).normal(size=(37, *shape)).astype(np.float32)
    for batch in (1, 37):
        outputs = onnx_outputs(path, rows[:batch])
        assert outputs.shape == (batch, CLASSES)
    assert check_onnx(model, path, rows) <= ONNX_TOLERANCE
    with torch.no_grad():  # the output is the module's forward output (logits), not probabilities
        np.testing.assert_allclose(onnx_outputs(path, rows, batch_size=10), model(torch.from_numpy(rows)), atol=1e-4)


def test_an_onnx_graph_of_another_model_fails_the_check(tmp_path: Path):
    model, _ = pruned("columnfc", SHAPE, 0.7)
    path = tmp_path / "model.onnx"
    export_onnx(model, SHAPE, path, meta_of(model))
    other, _ = pruned("columnfc", SHAPE, 0.0)
    with torch.no_grad():
        other.fc3.bias[0] += 1.0  # one class: a shift of every logit would leave the log-probs as they are
    rows = np.random.default_rng(0).normal(size=(8, *SHAPE)).astype(np.float32)
    with pytest.raises(WememError, match="differ from torch's"):
        check_onnx(other, path, rows)


def test_onnx_carries_the_metadata(tmp_path: Path):
    import onnx

    model, _ = pruned("columnfc", SHAPE, 0.7)
    meta = meta_of(model)
    export_onnx(model, SHAPE, tmp_path / "model.onnx", meta)
    props = {p.key: p.value for p in onnx.load(tmp_path / "model.onnx").metadata_props}
    assert ArtifactMeta.from_strings(props) == meta


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path):
    path = tmp_path / "model.onnx"
    path.write_text("not a graph")
    with pytest.raises(WememError, match="not an ONNX model"):
        onnx_outputs(path, np.zeros((1, *SHAPE), dtype=np.float32))


def test_the_model_card_names_each_file_by_its_hash_and_the_setting(tmp_path: Path):
    import hashlib
    import json

    from wemem.artifact import CardFigure, CardInputs, Estimate, model_card, safetensors_bytes, sparse_bytes
    from wemem.validity import resolution_check

    model, masks = pruned("columnfc", SHAPE, 0.7)
    folded, meta = fold_masks(model.state_dict(), masks), meta_of(model)
    files = {
        "model.safetensors": safetensors_bytes(folded, meta),
        "model.sparse.safetensors": sparse_bytes(folded, meta),
    }
    figure = CardFigure(
        "confirmed",
        "over fresh seeds",
        "balanced_accuracy",
        Estimate(0.8, 0.78, 0.82),
        Estimate(0.55, 0.53, 0.57),
        ("lira", "rmia"),
        "t over 3 seeds",
    )
    card = model_card(
        CardInputs(meta, {"fc1.weight": 0.7}, {"dataset": "location"}, [figure], [resolution_check("auc", 50)], files)
    )
    document = json.loads(card["model_card.json"])
    for name, content in files.items():
        digest = hashlib.sha256(content).hexdigest()
        assert document["files"][name] == {"sha256": digest, "bytes": len(content)}
        assert digest in card["model_card.md"]
    assert document["artifact"]["setting"] == meta.setting.to_json()
    assert '"defense": "rsw"' in card["model_card.md"] and "0.5500 [0.5300, 0.5700]" in card["model_card.md"]
    assert document["confirmed"] and document["validity"][0]["name"] == "resolution"


@pytest.mark.parametrize("name", ["model.safetensors", "model.sparse.safetensors", "model.onnx", "model_card.md"])
def test_apply_refuses_an_out_where_an_artifact_file_cannot_go_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
):
    from search.cli import main

    export = tmp_path / "best.toml"
    export.write_text('study = "s"\n')
    (tmp_path / "applied" / name).mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    assert main(["apply", str(export), "--out", str(tmp_path / "applied")]) == 2
    error = capsys.readouterr().err
    assert f"{name}: it is a folder" in error
    assert sorted(tmp_path.rglob("*")) == before


def test_the_card_says_when_a_defense_lives_outside_the_files():
    """HAMP transforms outputs at inference: the shipped network alone answers without that protection."""
    from search.results._apply import card_notes

    confirmed = {"confirmed": {"what": "over fresh seeds"}}
    assert "hamp defense transforms" in card_notes(confirmed, Setting("hamp", {}))[0]
    assert card_notes(confirmed, Setting("rmr", {"risky_fraction": 0.2})) == []
    not_confirmed = {"confirmed": None, "confirmed_note": "not confirmed: run `wemem confirm s`"}
    assert card_notes(not_confirmed, Setting("rmr", {"risky_fraction": 0.2})) == [not_confirmed["confirmed_note"]]
