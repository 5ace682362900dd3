"""A pre-norm transformer block, with cross-attention when it sits in Whisper's decoder.

resid_mid       = resid_pre + attn(ln1(resid_pre))
resid_mid_cross = resid_mid + cross_attn(ln_cross(resid_mid), encoder_out)   (decoder only)
resid_post      = resid_mid(_cross) + mlp(ln2(resid_mid(_cross)))
"""

from __future__ import annotations

import torch
import torch.nn as nn
from jaxtyping import Float, Int

from hooked_asr.components.attention import KV, Attention, RotaryEmbedding
from hooked_asr.components.mlp import MLP, GatedMLP
from hooked_asr.components.norm import LayerNorm, RMSNorm
from hooked_asr.hooks import HookPoint


class Block(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_mlp: int,
        ln_eps: float = 1e-5,
        causal: bool = False,
        cross_attention: bool = False,
        norm: str = "layernorm",
        mlp: str = "gelu",
        n_kv_heads: int | None = None,
        d_head: int | None = None,
        k_bias: bool = False,
        o_bias: bool = True,
        rotary: RotaryEmbedding | None = None,
    ):
        super().__init__()
        Norm = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}[norm]
        self.ln1 = Norm(d_model, ln_eps)
        self.attn = Attention(
            d_model, n_heads, d_head, n_kv_heads, causal=causal, k_bias=k_bias, o_bias=o_bias, rotary=rotary
        )
        self.has_cross_attention = cross_attention
        if cross_attention:
            self.ln_cross = Norm(d_model, ln_eps)
            self.cross_attn = Attention(d_model, n_heads, d_head, cross=True, k_bias=k_bias, o_bias=o_bias)
            self.hook_cross_attn_out = HookPoint()  # [batch, pos, d_model]
            self.hook_resid_mid_cross = HookPoint()  # [batch, pos, d_model]
        self.ln2 = Norm(d_model, ln_eps)
        self.mlp = {"gelu": MLP, "gated_silu": GatedMLP}[mlp](d_model, d_mlp)

        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(
        self,
        resid: Float[torch.Tensor, "batch pos d_model"],
        encoder_out: Float[torch.Tensor, "batch frame d_model"] | None = None,
        past_kv: dict[str, KV] | None = None,
        position_ids: Int[torch.Tensor, "batch pos"] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[Float[torch.Tensor, "batch pos d_model"], dict[str, KV]]:
        """Returns the block's output and its key/value cache ``{"self": kv, "cross": kv}``."""
        past_kv = past_kv or {}
        resid = self.hook_resid_pre(resid)
        attn_out, self_kv = self.attn(
            self.ln1(resid), past_kv=past_kv.get("self"), position_ids=position_ids, attention_mask=attention_mask
        )
        resid, present = self.after_attention(resid, attn_out, encoder_out, past_kv)
        return resid, {"self": self_kv, **present}

    def after_attention(
        self,
        resid: Float[torch.Tensor, "batch pos d_model"],
        attn_out: Float[torch.Tensor, "batch pos d_model"],
        encoder_out: Float[torch.Tensor, "batch frame d_model"] | None = None,
        past_kv: dict[str, KV] | None = None,
    ) -> tuple[Float[torch.Tensor, "batch pos d_model"], dict[str, KV]]:
        """The block from ``resid_mid`` on: ``resid_pre + attn_out``, cross-attention, MLP.
        Returns the output and the cross-attention cache (``{}`` without cross-attention); a run
        that resumes at ``attn.hook_z`` enters here (:mod:`hooked_asr.models.runner`)."""
        present: dict[str, KV] = {}
        resid = self.hook_resid_mid(resid + self.hook_attn_out(attn_out))
        if self.has_cross_attention:
            cross_out, present["cross"] = self.cross_attn(
                self.ln_cross(resid), kv_input=encoder_out, past_kv=(past_kv or {}).get("cross")
            )
            resid = self.hook_resid_mid_cross(resid + self.hook_cross_attn_out(cross_out))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid + mlp_out), present


__all__ = ["Block"]
