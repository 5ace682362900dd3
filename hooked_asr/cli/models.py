"""``hooked-asr models``: what can be loaded on this machine, and from where."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models this machine can load")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hooked_asr.loading.registry import list_models, weights_dir

    print(f"{'name':<22} {'source':<9} {'ready':<6} location / note")
    for m in list_models():
        print(f"{m.name:<22} {m.source:<9} {'yes' if m.available else 'no':<6} {m.location}  {m.note}")
    print(f"\nconverted checkpoints are cached in {weights_dir()}")
    return 0


__all__ = ["add_parser", "run"]
