"""Big tables without surprises: a table or array file above the limit is refused from its size or metadata before
anything is read (through the command line too: exit 2, nothing written), and a table is encoded in blocks of
columns, so the encoding's own memory stays within one block whatever the number of rows. The limits are lowered
here so that files of a few kilobytes stand for gigabytes."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wemem.data import custom, load_dataset, loaders
from wemem.errors import WememError

RNG = np.random.default_rng(0)


def table(rows: int = 300, numeric: int = 6) -> pd.DataFrame:
    frame = pd.DataFrame(RNG.normal(size=(rows, numeric)), columns=[f"f{j}" for j in range(numeric)])
    frame["colour"] = RNG.choice(["red", "green", "blue"], rows)
    frame["label"] = RNG.integers(0, 3, rows)
    return frame


def never_read(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the table was read although its size is above the limit")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_table_above_the_limit_is_refused_unread_with_the_ways_around(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"big.{kind}"
    getattr(table(), f"to_{kind}")(path, index=False)
    monkeypatch.setattr(custom, "MAX_TABLE_BYTES", 4096)
    monkeypatch.setattr(custom.pd, "read_csv", never_read)
    monkeypatch.setattr(custom, "read_parquet", never_read)

    with pytest.raises(WememError) as error:
        load_dataset(f"{kind}:{path}", None, 7)

    message = str(error.value)
    assert "above the 4.00 KiB" in message and "sample" in message and "loader plug-in" in message
    if kind == "parquet":  # counted from the metadata: 300 rows x 8 columns as 8-byte numbers
        assert "300 rows x 8" in message and "18.75 KiB" in message


def test_a_table_within_the_limit_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "table.parquet"
    table().to_parquet(path, index=False)
    monkeypatch.setattr(custom, "MAX_TABLE_BYTES", 8 * 300 * 8)

    assert load_dataset(f"parquet:{path}", None, 7).x.shape == (300, 9)


def test_arrays_above_the_limit_are_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.npz"
    np.savez(path, x=RNG.normal(size=(300, 8)), y=RNG.integers(0, 3, 300))
    monkeypatch.setattr(loaders, "MAX_NPZ_ARRAY_BYTES", 4096)

    with pytest.raises(WememError, match=r"18\.75 KiB\), above the 4\.00 KiB .* refused before allocating it"):
        load_dataset(f"npz:{path}", None, 7)


def test_the_command_line_refuses_a_big_table_with_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from search.cli import main

    path = tmp_path / "big.csv"
    table().to_csv(path, index=False)
    monkeypatch.setattr(custom, "MAX_TABLE_BYTES", 4096)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    code = main(["run", "--dataset", f"csv:{path}", "--serial"])

    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "refused before reading it" in (out + err).replace("\n", " ") and "Traceback" not in err
    assert list(work.iterdir()) == []


# ----------------------------------------------------------------------------------------- encoding in blocks


def test_encoding_in_blocks_gives_the_numbers_of_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = table(numeric=10)
    whole_encoding = custom.fit_encoding(frame, "label")
    whole = custom.encode_table(frame, whole_encoding)
    monkeypatch.setattr(custom, "ENCODING_BLOCK_BYTES", 8 * len(frame) * 3)  # blocks of 3 columns

    encoding = custom.fit_encoding(frame, "label")
    x, y = custom.encode_table(frame, encoding)

    assert encoding == whole_encoding
    assert np.array_equal(x, whole[0]) and np.array_equal(y, whole[1])


def test_a_bad_value_in_a_later_block_names_its_column(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = table(numeric=10)
    encoding = custom.fit_encoding(frame, "label")
    monkeypatch.setattr(custom, "ENCODING_BLOCK_BYTES", 8 * len(frame) * 3)

    frame.loc[5, "f7"] = np.inf
    with pytest.raises(WememError, match="column 'f7' holds 1 infinite"):
        custom.encode_table(frame, encoding)
    frame.loc[5, "f8"] = np.nan
    with pytest.raises(WememError, match="column 'f8' has 1 missing"):
        custom.encode_table(frame, encoding)


def test_the_encoding_allocates_the_features_and_one_block_beyond_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = table(rows=20_000, numeric=20)
    encoding = custom.fit_encoding(frame, "label")
    block = 8 * len(frame) * 2
    monkeypatch.setattr(custom, "ENCODING_BLOCK_BYTES", block)

    tracemalloc.start()
    try:
        x, _y = custom.encode_table(frame, encoding)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # a copy of the numbers (as the whole-table conversion made) would alone take 3.2 MB; the labels' keys and
    # one text column's strings as Python objects take the rest of the allowance
    text_column = len(frame) * 100
    assert peak - x.nbytes < 2 * block + text_column, (peak - x.nbytes, block)
