"""The one place the live explorer's browser tests import the headless-Chromium driver from (it may move
out of the package into tests/; change this import only)."""

from hooked_asr.explore.browser import Chromium  # noqa: F401

__all__ = ["Chromium"]
