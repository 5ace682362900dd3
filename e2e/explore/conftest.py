"""The explorer views the browser tests open are the suite's (tests/explore/conftest.py)."""

from tests.explore.conftest import panels_view, thirty_second_clip, thirty_second_view  # noqa: F401
