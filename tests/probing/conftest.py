"""Fixtures of the probing tests: one thread, and data with a planted linear signal."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small problems: thread hand-offs on a shared 2-core machine cost more than the maths."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted(n=600, d=16, seed=0, margin=0.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3.0, d) + torch.linspace(-2, 2, d)
    w = torch.randn(d, generator=g)
    s = (X - X.mean(0)) @ w
    keep = s.abs() > margin * s.std()
    return X[keep], (s[keep] > 0).long(), w
