"""Frame sources (hooked_asr/sae/frames.py): which frames of a clip a frame-level source keeps.

What is proven: the frames kept per clip are the ones :func:`hooked_asr.audio.audio_frames`
counts at the hook's own resolution, so Qwen2-Audio's pooled hook (half the tower's frames)
keeps half as many frames as the tower's blocks for the same clip, and the rows kept equal
the hook's activation read directly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hooked_asr import HookedQwen2Audio
from hooked_asr.audio import window_samples
from hooked_asr.sae.frames import ModelFrameSource
from tests.conftest import make_hf_qwen2_audio, make_tokenizer


def test_model_frame_source_counts_frames_at_the_hooks_resolution():
    model = HookedQwen2Audio.from_hf(make_hf_qwen2_audio("gqa"), tokenizer=make_tokenizer())
    w = window_samples(model)  # 32 mel frames: 16 tower frames, 8 pooled positions
    rng = np.random.default_rng(0)
    clips = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (w // 2, w // 5)]
    for hook, n_frames in [
        ("encoder.blocks.1.hook_resid_post", model.cfg.encoder.n_ctx),
        ("encoder.hook_pooled", model.cfg.encoder.n_ctx // 2),
    ]:
        src = ModelFrameSource(model, clips, hook, batch_size=2, pad_frames=0)
        x, clip_idx, frame_idx = src.chunk_with_meta(0)
        want = [math.ceil(len(c) * n_frames / w) for c in clips]
        assert torch.bincount(clip_idx).tolist() == want, hook
        got = {}
        with model.hooks(fwd_hooks=[(hook, lambda a, hook: got.update(x=a))]), torch.no_grad():
            model.encode(**model.prepare_features(clips))
        full = got["x"]
        assert full.shape[1] == n_frames
        expect = torch.cat([full[b, :n] for b, n in enumerate(want)]).float()
        torch.testing.assert_close(x, expect)
