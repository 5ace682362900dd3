"""Whisper's audio encoder (also Qwen2-Audio's audio tower).

x = gelu(conv1(mel)); x = gelu(conv2(x))          # stride 2: 2*n_ctx mel frames -> n_ctx frames
x = x^T + W_pos                                     # [batch, frame, d_model]
x = blocks(x)                                       # pre-norm, bidirectional
x = avg_pool(x)                                     # Qwen2-Audio only (pool_stride > 0)
out = ln_final(x)                                   # encoder.hook_out: what the decoder reads
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float

from hooked_asr.components.blocks import Block
from hooked_asr.components.norm import LayerNorm
from hooked_asr.config import EncoderConfig
from hooked_asr.hooks import HookPoint


class AudioEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.ln_eps, causal=False) for _ in range(cfg.n_layers)
        )
        self.ln_final = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.hook_mel = HookPoint(copy_input=True)  # the caller's tensor; [batch, n_mels, 2*n_ctx]
        self.hook_conv1 = HookPoint()  # [batch, d_model, 2*n_ctx]  after GELU
        self.hook_conv2 = HookPoint()  # [batch, d_model, n_ctx]    after GELU
        self.hook_pos_embed = HookPoint(copy_input=True)  # a view of W_pos; [batch, frame, d_model]
        if cfg.pool_stride:
            self.hook_pooled = HookPoint()  # [batch, n_ctx // pool_stride, d_model]
        self.hook_out = HookPoint()  # [batch, frame, d_model]

    def check_features(self, input_features: torch.Tensor) -> None:
        """Raise a clear error unless ``input_features`` is ``[batch, n_mels, 2*n_ctx]`` and finite."""
        want = (self.cfg.n_mels, self.cfg.n_frames)
        if input_features.ndim != 3 or tuple(input_features.shape[1:]) != want:
            raise ValueError(
                f"input_features must have shape [batch, {want[0]}, {want[1]}] (log-mel, {want[0]} bins, "
                f"30 s padded), got {tuple(input_features.shape)}; make them with "
                f"hooked_asr.audio.log_mel_spectrogram(audio, n_mels={want[0]})"
            )
        # min and max are NaN if any value is, and +-inf if any is: two reductions, no bool mask.
        if not torch.isfinite(torch.stack(torch.aminmax(input_features))).all():
            raise ValueError(
                "input_features contain NaN or inf; check the audio (hooked_asr.audio.load_audio validates it)"
            )

    def forward(
        self,
        input_features: Float[torch.Tensor, "batch n_mels mel_frames"],
        attention_mask: Float[torch.Tensor, "batch 1 frame frame"] | None = None,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
    ) -> Float[torch.Tensor, "batch frame d_model"]:
        """Encode log-mel features.

        ``stop_at_layer=l`` returns the residual stream after ``l`` blocks
        (``blocks.{l-1}.hook_resid_post``) with no pooling and no final norm: the encoder
        lens applies ``ln_final`` itself. ``start_at_layer=l`` (TransformerLens's name) takes
        ``input_features`` to be the residual entering block ``l`` (``blocks.{l}.hook_resid_pre``,
        ``[batch, frame, d_model]``) and runs only blocks ``l..``: a patch at layer ``l`` need
        not rerun what comes before it. ``attention_mask`` is additive over key frames
        (Qwen2-Audio masks padded frames). Resuming inside a block (at ``attn.hook_z``) is
        :func:`hooked_asr.models.runner.encode_from`.
        """
        if start_at_layer is None:
            self.check_features(input_features)
            x = self.hook_mel(input_features)
            x = self.hook_conv1(F.gelu(self.conv1(x)))
            x = self.hook_conv2(F.gelu(self.conv2(x)))
            x = x.transpose(1, 2)
            # W_pos first: the sum takes its first operand's memory layout, so the residual
            # stream is stored [batch, frame, d_model] (x first would keep conv2's channel-major
            # layout through every block and cost each LayerNorm a copy). The sum is the same.
            x = self.hook_pos_embed(self.W_pos[: x.shape[1]].expand(x.shape[0], -1, -1)) + x
        else:
            self.check_resid(input_features, start_at_layer)
            x = input_features
        for block in self.blocks[start_at_layer:stop_at_layer]:
            x, _ = block(x, attention_mask=attention_mask)
        if stop_at_layer is not None:
            return x
        if self.cfg.pool_stride:
            x = self.hook_pooled(self.pool(x))
        return self.hook_out(self.ln_final(x))

    def check_resid(self, resid: torch.Tensor, start_at_layer: int) -> None:
        """Raise a clear error unless ``resid`` is the residual ``[batch, n_ctx, d_model]`` entering
        block ``start_at_layer`` (in ``0..n_layers``)."""
        want = (self.cfg.n_ctx, self.cfg.d_model)
        if resid.ndim != 3 or tuple(resid.shape[1:]) != want:
            raise ValueError(
                f"with start_at_layer={start_at_layer} the input is the residual [batch, {want[0]}, {want[1]}] "
                f"(encoder.blocks.{start_at_layer}.hook_resid_pre), got {tuple(resid.shape)}"
            )
        if not 0 <= start_at_layer <= self.cfg.n_layers:
            raise ValueError(f"start_at_layer must be in 0..{self.cfg.n_layers}, got {start_at_layer}")

    def pool(self, x: Float[torch.Tensor, "batch frame d_model"]) -> Float[torch.Tensor, "batch pooled d_model"]:
        """Qwen2-Audio's average pooling over time, ``pooled_t = mean(x[s*t : s*t + s])`` with
        ``s = pool_stride`` (identity when ``pool_stride = 0``). Hooks are not run here."""
        if not self.cfg.pool_stride:
            return x
        return F.avg_pool1d(x.transpose(1, 2), self.cfg.pool_stride, self.cfg.pool_stride).transpose(1, 2)


__all__ = ["AudioEncoder"]
