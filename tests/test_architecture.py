"""The package's shape: the import arrow runs one way, and no module grows past one idea.

What is proven, by reading every ``import`` statement of every module in ``hooked_asr/``
(function-level imports included: a lazy import is still an arrow):

- every import points to the same layer or a lower one in LAYERS (base -> components ->
  loading -> models -> the package root -> methods -> cli);
- the graph between top-level units (subpackages and top-level modules) has no cycle, so
  two methods never lean on each other;
- methods reach models only through the public model API: no method imports a model module
  other than ``models.base`` (the API's types) and ``models.decoding`` (the decoding core's
  public names: results, word timings), never a file inside the core;
- no library module holds more than MAX_STATEMENTS logical lines (Python's NEWLINE tokens:
  statements, whatever the formatter does to their layout), except the ones listed with a reason.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hooked_asr"
# ~500 physical lines before `ruff format` (line length 120) spread long calls over several.
MAX_STATEMENTS = 350

# Lowest first. A top-level unit is a subpackage (``lens``) or a top-level module (``audio``).
# loading/ sits below models/: models load their weights through it, and its registry builds
# models through the classes the package root registers, so it never imports a model.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"hooks", "config", "audio", "text", "tokenizer", "plotting", "files", "fingerprint"}),
    ("components", {"components"}),
    ("loading", {"loading"}),
    ("models", {"models"}),
    ("root", {"<root>"}),  # hooked_asr/__init__.py: the public API (models, loading, audio)
    (
        "methods",
        {
            "activations",
            "probing",
            "monitors",
            "repetition",
            "lens",
            "patching",
            "circuits",
            "sae",
            "datasets",
            "explore",
        },
    ),
    ("cli", {"cli"}),
]

# Modules allowed over MAX_STATEMENTS, each with the reason it is not split here.
TOO_LONG_OK: dict[str, str] = {
    "models/activation_cache.py": "TransformerLens's ActivationCache API in one class (TL's own file is ~1,100 lines); "
    "the scores-only storage put it a few statements over: split the neuron helpers next",
}

# Upward arrows known and owned elsewhere, each with its reason; an entry whose import is gone fails.
UPWARD_OK: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").exists() or (PACKAGE.parent / rel / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """Every hooked_asr module ``path`` imports (``from hooked_asr import repetition`` is the
    module ``hooked_asr.repetition``; ``from hooked_asr import act_name`` is the root)."""
    here = _module_name(path)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "hooked_asr"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".")[: len(here.split(".")) - node.level + (path.name == "__init__.py")]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "hooked_asr":
                continue
            subs = [f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}")]
            out |= set(subs) if subs and len(subs) == len(node.names) else {mod, *subs}
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer_of(unit: str) -> int:
    for i, (_, units) in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"top-level unit {unit!r} is in no layer: add it to LAYERS in {__file__}")


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _graph()}
    for u in units:
        _layer_of(u)


def test_imports_never_point_up_a_layer():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            src, dst = _layer_of(_unit(mod)), _layer_of(_unit(dep))
            if dst > src and (mod, dep) not in UPWARD_OK:
                bad.append(f"{mod} ({LAYERS[src][0]}) imports {dep} ({LAYERS[dst][0]})")
    assert not bad, "imports that run back up the layers:\n" + "\n".join(sorted(bad))
    graph = _graph()
    stale = [edge for edge in UPWARD_OK if edge[1] not in graph.get(edge[0], set())]
    assert not stale, f"UPWARD_OK lists imports that are gone (remove them): {stale}"


def test_units_form_no_cycle():
    edges: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        edges.setdefault(_unit(mod), set()).update(
            _unit(d) for d in deps if _unit(d) != _unit(mod) and (mod, d) not in UPWARD_OK
        )
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        path.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(v) :] + [v]))
            if v not in state:
                visit(v)
        path.pop()
        state[u] = 2

    for u in sorted(edges):
        if u not in state:
            visit(u)


PUBLIC_MODEL_MODULES = {"hooked_asr.models.base", "hooked_asr.models.decoding"}


def test_methods_reach_models_only_through_the_public_api():
    methods = LAYERS[[n for n, _ in LAYERS].index("methods")][1]
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if _unit(mod) in methods
        for dep in deps
        if _unit(dep) == "models" and dep not in PUBLIC_MODEL_MODULES
    ]
    assert not bad, "methods importing model internals (use hook names and the model API):\n" + "\n".join(bad)


def _statements(path: Path) -> int:
    """Logical lines: one per statement however many physical lines the formatter gives it."""
    tokens = tokenize.tokenize(io.BytesIO(path.read_bytes()).readline)
    return sum(1 for t in tokens if t.type == tokenize.NEWLINE)


def test_no_library_module_is_over_the_statement_limit():
    long = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE).as_posix()
        n = _statements(p)
        if n > MAX_STATEMENTS and rel not in TOO_LONG_OK:
            long[rel] = n
    assert not long, f"modules over {MAX_STATEMENTS} statements (split them by idea): {long}"
    stale = [rel for rel in TOO_LONG_OK if not (PACKAGE / rel).exists() or _statements(PACKAGE / rel) <= MAX_STATEMENTS]
    assert not stale, f"TOO_LONG_OK lists modules that are short now (remove them): {stale}"


def test_statements_ignore_layout(tmp_path):
    one = tmp_path / "one.py"
    one.write_text("x = f(1, 2)  # a comment\n\n\n")
    many = tmp_path / "many.py"
    many.write_text("# a comment\nx = f(\n    1,\n    2,\n)\n")
    assert _statements(one) == _statements(many) == 1


def test_the_checker_sees_an_upward_arrow(tmp_path, monkeypatch):
    # The walk itself: a components module importing a method must be reported.
    pkg = tmp_path / "hooked_asr"
    (pkg / "components").mkdir(parents=True)
    (pkg / "lens").mkdir()
    for f in ["__init__.py", "components/__init__.py", "lens/__init__.py"]:
        (pkg / f).write_text("")
    (pkg / "components" / "bad.py").write_text("def f():\n    from hooked_asr.lens import logit_lens\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    try:
        test_imports_never_point_up_a_layer()
    except AssertionError as e:
        assert "hooked_asr.components.bad (components) imports hooked_asr.lens (methods)" in str(e)
    else:
        raise AssertionError("an upward import went unnoticed")


# ---- time and frame constants: audio.py is their one home ----------------------------------
TIME_CONSTANTS = {
    "SAMPLE_RATE",
    "N_FFT",
    "HOP_LENGTH",
    "CHUNK_SECONDS",
    "N_SAMPLES",
    "N_FRAMES",
    "HOP_SECONDS",
    "MEL_FRAME_SECONDS",
    "SAMPLES_PER_ENCODER_FRAME",
    "ENCODER_FRAME_SECONDS",
    "FRAME_SECONDS",
    "N_ENCODER_FRAMES",
    "TIME_PRECISION",
    "N_TIMESTAMPS",
    "SAMPLES_PER_FRAME",
}
TIME_LITERALS = {16000, 0.02}  # the sample rate; seconds per encoder frame and per timestamp token
# Copies known and being switched elsewhere, each with its reason; an entry whose copy is gone fails.
CONSTANT_COPIES_OK: dict[str, str] = {}


def _constant_copies(tree: ast.AST) -> list[str]:
    found = []
    negated = {id(n.operand) for n in ast.walk(tree) if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)}
    for node in ast.walk(tree):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, (ast.AnnAssign, ast.AugAssign))
            else []
        )
        found += [
            f"{t.id} = ... (line {node.lineno})" for t in targets if isinstance(t, ast.Name) and t.id in TIME_CONSTANTS
        ]
        if (
            isinstance(node, ast.Constant)
            and type(node.value) in (int, float)
            and node.value in TIME_LITERALS
            and id(node) not in negated
        ):
            found.append(f"literal {node.value} (line {node.lineno})")
        if isinstance(node, ast.FunctionDef) and "frame_seconds" in node.name:
            found.append(f"def {node.name} (line {node.lineno})")
    return found


def test_time_and_frame_constants_live_only_in_audio():
    copies = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE).as_posix()
        if rel != "audio.py":
            found = _constant_copies(ast.parse(p.read_text()))
            if found and rel not in CONSTANT_COPIES_OK:
                copies[rel] = found
    assert not copies, "time/frame constants outside audio.py (import them from hooked_asr.audio):\n" + "\n".join(
        f"{k}: {v}" for k, v in copies.items()
    )
    stale = [rel for rel in CONSTANT_COPIES_OK if not _constant_copies(ast.parse((PACKAGE / rel).read_text()))]
    assert not stale, f"CONSTANT_COPIES_OK lists modules without a copy now (remove them): {stale}"


# ---- one door per name: no private reach-ins, every module says what it exports ------------------
# Private names imported from another module, known and owned elsewhere (stale entries fail).
PRIVATE_IMPORTS_OK: dict[tuple[str, str], str] = {
    (
        "hooked_asr.circuits.eap",
        "_norm_fn",
    ): "circuits/ is being rewritten for issue 23 (methods): a public norm backward",
    ("hooked_asr.circuits.eap", "_projection"): "circuits/ is being rewritten for issue 23 (methods)",
    ("hooked_asr.circuits.eap", "_check_kwargs"): "circuits/ is being rewritten for issue 23 (methods)",
    ("hooked_asr.circuits.eap", "_reference_acts"): "circuits/ is being rewritten for issue 23 (methods)",
}
# Modules without __all__, each with its reason.
NO_ALL_OK: dict[str, str] = {}


def _private_imports() -> set[tuple[str, str]]:
    found = set()
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hooked_asr":
                found |= {
                    (_module_name(p), a.name)
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                }
    return found


def test_no_module_imports_another_modules_private_names():
    found = _private_imports()
    bad = sorted(found - set(PRIVATE_IMPORTS_OK))
    assert not bad, (
        "private names imported from another module (make them public there, or move the code):\n"
        + "\n".join(f"{m} imports {n}" for m, n in bad)
    )
    stale = sorted(set(PRIVATE_IMPORTS_OK) - found)
    assert not stale, f"PRIVATE_IMPORTS_OK lists imports that are gone (remove them): {stale}"


def test_every_module_declares_all():
    missing, stale = [], []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE).as_posix()
        has = any(
            isinstance(n, (ast.Assign, ast.AnnAssign))
            and any(
                getattr(t, "id", None) == "__all__" for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            )
            for n in ast.parse(p.read_text()).body
        )
        if not has and rel not in NO_ALL_OK:
            missing.append(rel)
        if has and rel in NO_ALL_OK:
            stale.append(rel)
    assert not missing, f"modules without __all__ (say what the module exports): {missing}"
    assert not stale, f"NO_ALL_OK lists modules that have __all__ now (remove them): {stale}"


def test_every_name_in_all_exists():
    import importlib

    bad = []
    for p in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(p)
        if name.endswith("__main__"):
            continue
        mod = importlib.import_module(name)
        bad += [f"{name}.{n}" for n in getattr(mod, "__all__", []) if not hasattr(mod, n)]
    assert not bad, f"__all__ names that do not exist: {bad}"


# Names every subcommand module defines by protocol (cli/__init__ calls each module's pair).
PROTOCOL_NAMES = {"add_parser", "run"}


def test_each_public_name_has_one_home():
    """A name in the ``__all__`` of two modules (other than a package ``__init__`` re-exporting
    its own submodule) is two doors to one room, or two rooms under one name."""
    homes: dict[str, list[str]] = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        if p.name == "__init__.py":
            continue
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                for name in ast.literal_eval(node.value):
                    homes.setdefault(name, []).append(p.relative_to(PACKAGE).as_posix())
    many = {n: w for n, w in homes.items() if len(w) > 1 and n not in PROTOCOL_NAMES}
    assert not many, f"public names listed in several modules' __all__ (keep one home, rename a collision): {many}"
