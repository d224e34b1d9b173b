"""Display of a trial's stage timings (status --trial, run, report columns) on a hand-made record."""

from __future__ import annotations

from search.results._text import timing_columns, timing_lines

RECORD = {
    "total": 10.0,
    "pruning_stage": 4.0,
    "attack_stage": 6.0,
    "shared": {"split": 0.5, "pretraining": 20.0, "memscores": 30.0, "reference": 9.0},
    "models": {"victim": {"setup": 0.1, "pruning": 3.5, "outputs": 0.4, "total": 4.0}},
    "attacks": {"conf": {"total": 0.01}, "nn": {"fit": 5.0, "score": 0.5, "total": 5.5}},
}


def test_timing_lines_show_every_stage_and_part():
    lines = timing_lines(RECORD)
    assert lines[0] == "timings (s): experiment 10.00 = pruning stage 4.00 + attack stage 6.00"
    assert "pretraining 20.00" in lines[1] and "reference 9.00" in lines[1]
    assert "victim 4.00 (setup 0.10, pruning 3.50, outputs 0.40)" in lines[2]
    assert "conf 0.01; nn 5.50 (fit 5.00, score 0.50)" in lines[3]


def test_trials_stored_before_timings_show_nothing():
    assert timing_lines({}) == [] and timing_columns({}) == {}


def test_timing_columns_are_flat():
    columns = timing_columns(RECORD)
    assert columns["seconds.attack_stage"] == 6.0 and columns["seconds.shared.memscores"] == 30.0
    assert columns["seconds.model.victim"] == 4.0
    assert columns["seconds.attack.nn"] == 5.5 and columns["seconds.attack.nn.fit"] == 5.0
