"""The model classes ``load_model`` builds, per checkpoint architecture.

loading/ sits below models/ (models load their weights through it), so it never imports a
model class: the package root registers them, by ``"module:Class"`` name so that
``import hooked_asr`` stays light (torch is imported on the first load, not before).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODEL_CLASSES: dict[str, Any] = {}


def register_model_class(architecture: str, cls: Any) -> None:
    """Let ``load_model`` build ``architecture`` checkpoints with ``cls.from_state_dict``
    (``cls``: the class, or ``"package.module:ClassName"`` imported on first use)."""
    _MODEL_CLASSES[architecture] = cls


def model_class(architecture: str, error: type[Exception]) -> Any:
    """The class registered for ``architecture`` (raises ``error`` naming the known ones)."""
    if architecture not in _MODEL_CLASSES:
        raise error(
            f"no model class registered for {architecture!r} checkpoints (known: {sorted(_MODEL_CLASSES)}); "
            "import hooked_asr, which registers them"
        )
    cls = _MODEL_CLASSES[architecture]
    if isinstance(cls, str):
        module, _, name = cls.partition(":")
        cls = _MODEL_CLASSES[architecture] = getattr(importlib.import_module(module), name)
    return cls


__all__ = ["model_class", "register_model_class"]
