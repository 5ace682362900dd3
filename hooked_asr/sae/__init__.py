"""Sparse autoencoders on frame-level encoder activations (Pluth et al., 2026).

from hooked_asr.sae import SAEConfig, SparseAutoencoder, ModelFrameSource, SAETrainer, TrainConfig
from hooked_asr.sae.evaluate import reconstruction_metrics, splice_metrics
from hooked_asr.sae.steering import FeatureIntervention, steer
source = ModelFrameSource(model, clips, "encoder.blocks.3.hook_resid_post")
sae = SparseAutoencoder(SAEConfig(d_in=384, d_sae=3072, architecture="topk", k=32,
                                  hook_name="encoder.blocks.3.hook_resid_post"))
SAETrainer(sae, TrainConfig(total_frames=200_000, checkpoint_dir="runs/sae")).train(source)
reconstruction_metrics(sae, source)                  # FVU, L0, dead and dense fractions
splice_metrics(model, sae, clips, references)        # WER and decoder CE with the SAE spliced in
with steer(model, sae, [FeatureIntervention(feature=12, mode="clamp", value=0.0)]):
    model.transcribe(audio)
"""

from hooked_asr.sae.frames import (
    CachedFrameSource,
    FrameSource,
    GeneratedFrameSource,
    ModelFrameSource,
    TensorFrameSource,
)
from hooked_asr.sae.model import SAEConfig, SparseAutoencoder, identity_sae, load_sae, save_sae
from hooked_asr.sae.trainer import SAETrainer, TrainConfig, train_sae

__all__ = [
    "CachedFrameSource",
    "FrameSource",
    "GeneratedFrameSource",
    "ModelFrameSource",
    "TensorFrameSource",
    "SAEConfig",
    "SparseAutoencoder",
    "identity_sae",
    "load_sae",
    "save_sae",
    "SAETrainer",
    "TrainConfig",
    "train_sae",
]
