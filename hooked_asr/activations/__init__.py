"""Activations on disk: extract hooks over a dataset (pooled, sharded, resumable, distributed)."""

from hooked_asr.activations.extract import extract_activations, init_distributed, resolve_pooling
from hooked_asr.activations.pooling import POOLINGS, default_pooling, pool
from hooked_asr.activations.store import ActivationStore, StoreError

__all__ = [
    "ActivationStore",
    "POOLINGS",
    "StoreError",
    "default_pooling",
    "extract_activations",
    "init_distributed",
    "pool",
    "resolve_pooling",
]
