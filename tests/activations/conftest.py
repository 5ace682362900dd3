"""Fixtures for the activation-store tests (helpers live in ``_workers`` so spawned ranks share them)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _workers import small_whisper  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return small_whisper()
