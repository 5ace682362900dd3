"""Fixtures for the reliability tests."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "activations"))


@pytest.fixture(scope="session")
def audio_whisper():
    """A tiny random Whisper that reads real 30-s windows (so it takes audio, not only features)."""
    from _workers import small_whisper

    return small_whisper()
