"""Linear probes on pooled activations, layer by layer (paper Sec 4.1-4.3).

A probe reads one vector per clip (encoder hooks: mean over the clip's audio frames;
decoder hooks: the end-of-text position; see :mod:`hooked_asr.activations.pooling`) and
asks whether a property of the clip is linearly decodable from it.

Features are standardised with the training split's statistics, ``z = (x - mu) / sigma``
(``sigma = 1`` for constant features), then:

- binary logistic regression: ``p(y = c_1 | x) = sigmoid(w . z + b)``;
- multi-class (softmax) regression: ``p(y = c_k | x) = softmax(W z + b)_k``;
- both minimise ``mean_i CE_i + (l2 / 2) ||W||_F^2`` (the bias is not penalised) by
  full-batch L-BFGS in torch, so they run on whatever device the features are on
  (large-v3's 1280-d features on a GPU included);
- linear (ridge) regression: with ``y`` standardised as well, ``w`` solves
  ``(Z^T Z / n + l2 I) w = Z^T y_s / n`` exactly (``l2 = 0``: the pseudo-inverse).

Held-out evaluation uses a stratified split (each class keeps its share of the test
set; with the same ``seed`` every layer sees the same split, so layers compare on the
same items). Metrics on the test split: accuracy, F1 (**binary F1 of the larger label**
``classes[-1]`` for two classes, e.g. label 1; **macro F1**, the unweighted mean of
per-class F1, for more), the confusion matrix (rows = true class, columns = predicted),
and the majority-class rate as the chance level.

    >>> res = fit_probe(X, y)                                   # X [n, d], y [n]
    >>> res.test_acc, res.f1, res.confusion
    >>> sweep = probe_layers(store, label_key="label")          # every hook of an ActivationStore
    >>> print(sweep.summary()); sweep.plot("acc.png"); sweep.best_layer
    >>> sweep = probe_model(model, dataset, hooks="encoder", out_dir="acts/gender")

One idea per module: :mod:`~hooked_asr.probing.data` (features, labels, split),
:mod:`~hooked_asr.probing.probe` (the probe, its training and metrics),
:mod:`~hooked_asr.probing.sweep` (layer sweeps), :mod:`~hooked_asr.probing.driver` (model -> store -> sweep).
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
