"""The one place the live explorer's browser tests import the headless-Chromium driver from
(tests/browser.py, test tooling outside the package)."""

from tests.browser import Chromium  # noqa: F401

__all__ = ["Chromium"]
