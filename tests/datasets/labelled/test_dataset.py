"""LabelledDataset: folder round trip, subsets, and the item contract the activation extractor reads."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_asr.datasets.labelled import (
    LabelledDataset,
    gender_dataset,
    hallucination_prone_inputs,
    noisy_dataset,
    speech_nonspeech_dataset,
)


def test_save_load_roundtrip_and_subsets(tmp_path, same_audio):
    ds = speech_nonspeech_dataset(2, seed=3, progress=False)
    ds.save(tmp_path / "d")
    assert (tmp_path / "d" / "metadata.csv").read_text().splitlines()[0].startswith("label,")
    back = LabelledDataset.load(tmp_path / "d")
    assert back.dataset_id == ds.dataset_id and back.label_names == ds.label_names and len(back) == len(ds)
    assert back.metadata() == ds.metadata()
    assert same_audio(ds, back)  # float32 wav: bit-exact
    sub = ds[1:3]
    assert isinstance(sub, LabelledDataset) and len(sub) == 2 and sub.dataset_id != ds.dataset_id
    np.testing.assert_array_equal(sub[0]["audio"], ds[1]["audio"])
    assert list(ds[-1]) == list(ds[len(ds) - 1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        LabelledDataset.load(tmp_path)


def test_items_fit_the_activation_extractor_contract():
    """Every value is audio, a number (label tensors) or a string (metadata); keys agree across items."""
    for ds in (noisy_dataset(1, progress=False), hallucination_prone_inputs(1, progress=False)):
        keys = {tuple(sorted(ds[i])) for i in range(len(ds))}
        assert len(keys) == 1
        for i in range(len(ds)):
            for k, v in ds[i].items():
                assert k == "audio" or isinstance(v, (int, float, str)), (k, v)


def test_extract_activations_reads_a_built_dataset(tmp_path):
    from hooked_asr import HookedWhisper
    from hooked_asr.activations import extract_activations
    from tests.conftest import make_hf_whisper_30s

    # a random 1+1-layer Whisper with the real 30-s window (1500 frames)
    model = HookedWhisper.from_hf(make_hf_whisper_30s(max_target_positions=16, init="hf"))
    ds = gender_dataset(2, seed=0, progress=False)
    hook = "encoder.blocks.0.hook_resid_post"
    store = extract_activations(model, ds, [hook], tmp_path / "store", batch_size=4, max_new_tokens=2, progress=False)
    assert store.n_items == len(ds) and store.spec["dataset"] == ds.dataset_id
    assert store.labels("label").tolist() == ds.labels().tolist()
    assert store.load(hook).shape[0] == len(ds)
