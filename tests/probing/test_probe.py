"""Linear probes (hooked_asr/probing/probe.py): planted signals recovered, chance on random labels,
metrics checked against independent numpy computations (Newton's method for logistic regression,
lstsq / closed-form ridge for regression), save/load round trip, and every bad-input error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hooked_asr.probing import (
    LinearProbe,
    confusion_matrix,
    f1_from_confusion,
    fit_probe,
    probe_layers,
    train_probe,
)
from tests.probing.conftest import planted


def test_binary_probe_recovers_planted_direction():
    X, y, w = planted(margin=0.1)
    res = fit_probe(X, y, l2=1e-3)
    assert res.task == "classification" and res.classes == [0, 1]
    assert res.train_acc > 0.98 and res.test_acc > 0.95
    assert res.f1 > 0.95
    cos = float(torch.dot(res.probe.direction.double(), (w / w.norm()).double()))
    assert cos > 0.97, cos
    # coef is the map on raw features: logits = X @ W.T + b
    W, b = res.probe.coef
    logits = res.probe(X)[:, 0]
    torch.testing.assert_close(X.double() @ W[0] + b[0], logits, atol=1e-8, rtol=1e-8)


def test_random_labels_are_near_chance_on_test():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(400, 64, generator=g)
    accs = []
    for seed in range(3):
        y = torch.randint(0, 2, (400,), generator=g)
        res = fit_probe(X, y, seed=seed)
        accs.append(res.test_acc)
        assert res.train_acc > res.test_acc  # it memorises the training split, and that does not transfer
        assert abs(res.chance - 0.5) < 0.05
    assert abs(np.mean(accs) - 0.5) < 0.12, accs


def test_multiclass_confusion_and_macro_f1():
    g = torch.Generator().manual_seed(1)
    n_per, d = 60, 8
    means = torch.randn(3, d, generator=g) * 2.0
    X = torch.cat([means[k] + torch.randn(n_per, d, generator=g) for k in range(3)])
    labels = torch.tensor([5, 7, 9]).repeat_interleave(n_per)  # non-contiguous label values
    res = fit_probe(X, labels, test_size=0.25)
    assert res.classes == [5, 7, 9] and res.probe.linear.out_features == 3
    cm = res.confusion
    assert cm.shape == (3, 3) and cm.sum() == res.n_test == 45
    assert (cm.sum(1) == 15).all()  # stratified: each class keeps its share of the test split
    assert res.test_acc == pytest.approx(np.trace(cm) / cm.sum())
    assert res.test_acc > 0.8
    # independent macro F1 from the predictions
    pred = res.probe.predict(X[res.test_idx]).numpy()
    true = labels[res.test_idx].numpy()
    f1s = []
    for c in (5, 7, 9):
        tp = ((pred == c) & (true == c)).sum()
        prec = tp / max((pred == c).sum(), 1)
        rec = tp / (true == c).sum()
        f1s.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    assert res.f1 == pytest.approx(np.mean(f1s))
    proba = res.probe.predict_proba(X)
    torch.testing.assert_close(proba.sum(1), torch.ones(len(X), dtype=proba.dtype))


def test_binary_f1_is_f1_of_larger_label():
    cm = np.array([[8, 2], [1, 9]])  # rows true, columns predicted
    assert f1_from_confusion(cm) == pytest.approx(2 * 9 / (2 * 9 + 2 + 1))
    assert (
        confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2]), 3)
        == np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    ).all()


# ---- independent checks ----------------------------------------------------------------------


def newton_logistic(Z, y, l2, iters=50):
    """Minimise mean BCE + (l2/2)||w||^2 (bias unpenalised) by Newton's method, in numpy."""
    n, d = Z.shape
    A = np.hstack([Z, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    P = np.eye(d + 1) * l2
    P[-1, -1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-A @ theta))
        grad = A.T @ (p - y) / n + P @ theta
        H = (A * (p * (1 - p))[:, None]).T @ A / n + P
        theta -= np.linalg.solve(H, grad)
    return theta[:-1], theta[-1]


def test_logistic_matches_numpy_newton():
    X, y, _ = planted(n=300, d=6, seed=4)
    Xn = X.double().numpy()
    Z = (Xn - Xn.mean(0)) / Xn.std(0)
    flip = np.random.default_rng(0).random(len(y)) < 0.1  # not separable: a unique, finite optimum
    yn = np.where(flip, 1 - y.numpy(), y.numpy()).astype(float)
    w_ref, b_ref = newton_logistic(Z, yn, l2=1e-2)
    probe = train_probe(X, yn.astype(int), l2=1e-2, tol=1e-10, max_iter=1000)
    np.testing.assert_allclose(probe.linear.weight.detach().numpy()[0], w_ref, atol=1e-6)
    assert float(probe.linear.bias.detach()) == pytest.approx(b_ref, abs=1e-6)


def test_multiclass_softmax_is_stationary():
    """At the optimum the gradient of mean CE + (l2/2)||W||^2 vanishes (computed in numpy)."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(240, 5, generator=g)
    y = torch.randint(0, 4, (240,), generator=g)
    l2 = 0.05
    probe = train_probe(X, y, l2=l2, tol=1e-10, max_iter=1000)
    Z = probe.standardise(X).numpy()
    W, b = probe.linear.weight.detach().numpy(), probe.linear.bias.detach().numpy()
    logits = Z @ W.T + b
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    Y = np.eye(4)[y.numpy()]
    gW = (P - Y).T @ Z / len(Z) + l2 * W
    gb = (P - Y).mean(0)
    assert np.abs(gW).max() < 1e-7 and np.abs(gb).max() < 1e-7


def test_regression_recovers_coefficients_like_lstsq():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 7)) * 3 + 1
    coef = rng.normal(size=7)
    y = X @ coef + 2.5 + 0.01 * rng.normal(size=200)
    res = fit_probe(torch.tensor(X), torch.tensor(y), l2=0.0)
    assert res.task == "regression" and res.test_r2 > 0.999
    A = np.hstack([X[res.train_idx], np.ones((res.n_train, 1))])
    sol = np.linalg.lstsq(A, y[res.train_idx], rcond=None)[0]
    W, b = res.probe.coef
    np.testing.assert_allclose(W[0].numpy(), sol[:-1], atol=1e-8)
    assert float(b[0]) == pytest.approx(sol[-1], abs=1e-8)
    np.testing.assert_allclose(W[0].numpy(), coef, atol=5e-3)
    # ridge: closed form on standardised features and targets
    l2 = 0.3
    probe = train_probe(X, y, task="regression", l2=l2)
    Z = (X - X.mean(0)) / X.std(0)
    ys = (y - y.mean()) / y.std()
    w_ref = np.linalg.solve(Z.T @ Z / len(Z) + l2 * np.eye(7), Z.T @ ys / len(Z))
    np.testing.assert_allclose(probe.linear.weight.detach().numpy()[0], w_ref, atol=1e-10)
    np.testing.assert_allclose(probe.predict(X).numpy(), (Z @ w_ref) * y.std() + y.mean(), atol=1e-9)


# ---- io --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "multi", "strings", "regression"])
def test_save_load_round_trip(tmp_path, kind):
    g = torch.Generator().manual_seed(7)
    X = torch.randn(90, 12, generator=g)
    y = {
        "binary": (X[:, 0] > 0).long(),
        "multi": torch.arange(90) % 3,
        "strings": [["en-us", "en-gb", "en-in"][i % 3] for i in range(90)],
        "regression": X[:, 1].double() * 2,
    }[kind]
    res = fit_probe(X, y)
    path = res.probe.save(tmp_path / "probe")
    assert path.exists() and path.with_suffix(".json").exists()
    cfg = json.loads(path.with_suffix(".json").read_text())
    assert cfg["d_in"] == 12 and cfg["task"] == res.task
    loaded = LinearProbe.load(tmp_path / "probe")
    assert loaded.classes == res.probe.classes
    assert torch.equal(loaded.predict(X), res.probe.predict(X))
    if res.task == "classification":
        assert torch.equal(loaded.predict_proba(X), res.probe.predict_proba(X))
    if kind == "strings":
        assert res.classes == ["en-gb", "en-in", "en-us"]


# ---- errors ----------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    X = torch.randn(20, 4)
    y = torch.arange(20) % 2
    with pytest.raises(ValueError, match="19 labels but X has 20 rows"):
        fit_probe(X, y[:19])
    with pytest.raises(ValueError, match="single class"):
        fit_probe(X, torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="single class"):
        train_probe(X, torch.ones(20, dtype=torch.long))
    Xbad = X.clone()
    Xbad[3, 1] = float("nan")
    Xbad[5, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 non-finite values .*first: \[3, 5\]"):
        fit_probe(Xbad, y)
    y_rare = y.clone()
    y_rare[:] = 0
    y_rare[4] = 1
    with pytest.raises(ValueError, match="class 1 has 1 item"):
        fit_probe(X, y_rare)
    fit_probe(X, y_rare, test_size=0)  # no held-out split asked for: fine
    with pytest.raises(ValueError, match=r"\[n_items, d\]"):
        fit_probe(torch.randn(20), y)
    with pytest.raises(ValueError, match="different numbers of rows"):
        probe_layers({0: X, 1: X[:18]}, y)
    with pytest.raises(KeyError, match="not in the mapping"):
        probe_layers({0: X}, y, hooks=[0, 1])
    with pytest.raises(ValueError, match="task must be"):
        fit_probe(X, y, task="clustering")
    res = fit_probe(X, y)
    with pytest.raises(ValueError, match=r"reads \[n, 4\]"):
        res.probe.predict(torch.randn(3, 5))
