"""Options shared by the probing scripts (run as scripts, so they import this by its bare name)."""

from __future__ import annotations

import argparse

import torch


def add_probe_options(ap: argparse.ArgumentParser, l2: float = 1e-3, test_size: float = 0.2,
                      smoke_help: str = "tiny settings (n=4) for a quick check") -> None:
    """``--seed --l2 --test-size --batch-size --device --smoke`` with per-script defaults."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l2", type=float, default=l2, help="L2 penalty of the logistic probes")
    ap.add_argument("--test-size", type=float, default=test_size, help="held-out share (stratified)")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per extraction batch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help=smoke_help)
