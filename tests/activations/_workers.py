"""Entry points run in child processes (spawned ranks, a writer that is killed mid-shard)."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
# The checkout's root, so a child process imports this checkout's hooked_asr (not an installed
# copy) and tests.conftest.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

HOOKS = ["encoder.blocks.1.hook_resid_post", "decoder.blocks.1.hook_resid_post"]
KW = dict(shard_size=3, batch_size=2, max_new_tokens=4, progress=False)


def small_whisper(seed: int = 0):
    """Random fp32 HookedWhisper: d_model 32, 2+2 layers, 1500 encoder frames (30-s window).

    Deterministic in ``seed``, so spawned processes build the same weights.
    """
    from hooked_asr import HookedWhisper
    from tests.conftest import make_hf_whisper_30s

    hf = make_hf_whisper_30s(2, 2, seed=seed, init="spread_norms", suppress_tokens=[], begin_suppress_tokens=[50256])
    return HookedWhisper.from_hf(hf)


def clips(n: int, seed: int = 0) -> list[dict]:
    """Labelled clips of varied lengths (0.1 to 1.2 s): tones whose pitch depends on the label."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        length = int(rng.integers(1600, 19200))
        t = np.arange(length) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (220 if label else 660) * t) + 0.05 * rng.standard_normal(length)
        out.append({"audio": audio.astype(np.float32), "label": label, "id": f"clip{i}", "gain": float(i) / 10})
    return out


def rank_main(rank: int, world: int, init_file: str, out_dir: str, n_items: int) -> None:
    from hooked_asr.activations import extract_activations

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        extract_activations(small_whisper(), clips(n_items), HOOKS, out_dir, dataset_id="clips", **KW)
    finally:
        torch.distributed.destroy_process_group()


class KillAt:
    """A dataset that SIGKILLs its own process when item ``kill_at`` is read."""

    def __init__(self, items: list, kill_at: int):
        self.items, self.kill_at = items, kill_at

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        if i == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.items[i]


if __name__ == "__main__":  # python _workers.py OUT_DIR N_ITEMS KILL_AT
    from hooked_asr.activations import extract_activations

    torch.set_num_threads(1)
    out, n, kill_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    extract_activations(small_whisper(), KillAt(clips(n), kill_at), HOOKS, out, dataset_id="clips", **KW)
