"""A sweep's results file never mixes runs (issue 28, items 1 and 7). Its header holds a
fingerprint of everything that decides the rows (the model's name and a hash of its weights,
the generation settings, every option) and each row the content hash of its item's audio; a
resume that differs in any of them is refused, naming what differs. Components and items not
asked for are not returned. One sweep at a time writes a file (a lock); a damaged last line (a
full disk, a killed run) is reported with the file name and its rows recomputed; a (component,
item) with a metric row missing is recomputed."""

from __future__ import annotations

import fcntl
import json

import numpy as np
import pytest
import torch

from hooked_asr import HookedWhisper
from hooked_asr.patching import SweepItem, components, sweep


def _items(model, n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    shape = (1, model.cfg.encoder.n_mels, model.cfg.encoder.n_frames)
    return [
        SweepItem(f"item{k}", torch.randn(shape, generator=g), reference=torch.randn(shape, generator=g))
        for k in range(n)
    ]


KW = dict(mode="teacher_forced", metrics=["logprob", "logit_diff"], max_new_tokens=4, progress=False)


def _kw(path):
    return {**KW, "results_path": path}


def _with_diff(items):
    for it in items:
        it.extra["logit_diff"] = (-1, 11, 22)
    return items


@pytest.fixture
def setup(model, tmp_path):
    items = _with_diff(_items(model))
    comps = components(model, heads=False)[:6]
    return items, comps, tmp_path / "sweep.jsonl"


def test_same_item_id_with_other_audio_is_refused_naming_the_item(model, setup):
    items, comps, path = setup
    sweep(model, items, comps, "zero", **_kw(path))
    other = _with_diff(_items(model, seed=99))  # same ids, other audio (the second --say)
    with pytest.raises(ValueError, match=r"item 'item0'.*other audio"):
        sweep(model, other, comps, "zero", **_kw(path))


def test_another_model_is_refused_naming_the_model(model, setup):
    from tests.conftest import make_hf_whisper

    items, comps, path = setup
    sweep(model, items, comps, "zero", **_kw(path))
    hf = make_hf_whisper("en-80mel")
    with torch.no_grad():
        next(hf.parameters()).add_(0.01)  # same name and shapes, other weights
    other = HookedWhisper.from_hf(hf)
    with pytest.raises(ValueError, match=r"different sweep.*model"):
        sweep(other, items, comps, "zero", **_kw(path))


@pytest.mark.parametrize(
    "change",
    [
        dict(max_new_tokens=5),
        dict(positions=[0]),
        dict(teacher_forced_kwargs={"language": "en"}),
        dict(reference="noise"),
    ],
)
def test_another_option_is_refused_naming_it(model, setup, change):
    items, comps, path = setup
    sweep(model, items, comps, "zero", **_kw(path))
    with pytest.raises(ValueError, match=rf"different sweep.*{next(iter(change))}"):
        sweep(model, items, comps, "zero", **{**_kw(path), **change})


def test_components_and_items_not_asked_for_are_not_returned(model, setup):
    items, comps, path = setup
    sweep(model, items, comps, "zero", **_kw(path))
    res = sweep(model, items[:1], comps[:2], "zero", **_kw(path))
    assert set(res.table["component"]) == {c.name for c in comps[:2]}
    assert set(res.table["item"]) == {"item0"}
    assert res.n_batched_runs == 0


def test_truncated_last_line_is_reported_and_recomputed(model, setup):
    items, comps, path = setup
    fresh = sweep(model, items, comps, "zero", **_kw(path))
    text = path.read_bytes()
    path.write_bytes(text[: len(text) - 17])  # a full disk cut the last row short
    with pytest.warns(UserWarning, match=rf"{path.name}.*line {len(text.splitlines())}.*cut short"):
        again = sweep(model, items, comps, "zero", **_kw(path))
    assert again.n_batched_runs >= 1
    pd_cols = ["item", "component", "metric"]
    a = again.table.sort_values(pd_cols)["value"].to_numpy()
    np.testing.assert_allclose(a, fresh.table.sort_values(pd_cols)["value"].to_numpy(), atol=1e-5)
    assert len(again.table) == len(fresh.table)
    # the file was repaired: a third run reads everything and computes nothing
    third = sweep(model, items, comps, "zero", **_kw(path))
    assert third.n_batched_runs == 0 and len(third.table) == len(fresh.table)


def test_damaged_middle_line_is_refused_naming_file_and_line(model, setup):
    items, comps, path = setup
    sweep(model, items, comps, "zero", **_kw(path))
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=rf"{path}.*line 4"):
        sweep(model, items, comps, "zero", **_kw(path))


def test_a_missing_metric_row_is_recomputed(model, setup):
    items, comps, path = setup
    fresh = sweep(model, items, comps, "zero", **_kw(path))
    lines = path.read_text().splitlines(keepends=True)
    dropped = json.loads(lines[5])
    path.write_text("".join(lines[:5] + lines[6:]))
    again = sweep(model, items, comps, "zero", **_kw(path))
    assert again.n_batched_runs >= 1
    assert len(again.table) == len(fresh.table)
    assert not again.table.duplicated(["component", "item", "metric"]).any()
    row = again.table.query(
        "component == @dropped['component'] and item == @dropped['item'] and metric == @dropped['metric']"
    )
    assert row["value"].item() == pytest.approx(dropped["value"], abs=1e-5)


def test_a_second_sweep_on_a_locked_file_is_refused(model, setup):
    items, comps, path = setup
    sweep(model, items, comps[:1], "zero", **_kw(path))
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+") as f:  # what a running sweep holds
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError, match=r"another sweep.*sweep.jsonl"):
            sweep(model, items, comps, "zero", **_kw(path))
    sweep(model, items, comps, "zero", **_kw(path))  # released: runs
