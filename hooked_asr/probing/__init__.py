"""Linear probes on pooled activations, layer by layer (paper Sec 4.1-4.3).

A probe reads one vector per clip (encoder hooks: mean over the clip's audio frames;
decoder hooks: the end-of-text position; see :mod:`hooked_asr.activations.pooling`) and
asks whether a property of the clip is linearly decodable from it. One idea per module:

- :mod:`~hooked_asr.probing.data`: features, labels, the task they imply, the stratified split;
- :mod:`~hooked_asr.probing.probe`: the probe, its training (the maths is there) and metrics;
- :mod:`~hooked_asr.probing.sweep`: one probe per layer on the same split;
- :mod:`~hooked_asr.probing.driver`: model -> activation store -> sweep.

    >>> res = fit_probe(X, y)                                   # X [n, d], y [n]
    >>> sweep = probe_layers(store, label_key="label")          # every hook of an ActivationStore
    >>> sweep = probe_model(model, dataset, hooks="encoder", out_dir="acts/gender")
"""

from hooked_asr.probing.data import stratified_split
from hooked_asr.probing.driver import model_hooks, probe_model
from hooked_asr.probing.probe import (
    DEFAULT_L2,
    LinearProbe,
    ProbeResult,
    confusion_matrix,
    f1_from_confusion,
    fit_probe,
    train_probe,
)
from hooked_asr.probing.sweep import ProbeSweep, probe_layers

__all__ = [
    "DEFAULT_L2",
    "LinearProbe",
    "ProbeResult",
    "ProbeSweep",
    "confusion_matrix",
    "f1_from_confusion",
    "fit_probe",
    "model_hooks",
    "probe_layers",
    "probe_model",
    "stratified_split",
    "train_probe",
]
