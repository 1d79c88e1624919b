"""Skip a test when the machine lacks something, except in CI, where a missing tool is a failure."""

import os

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip (or, with DREAM_REQUIRE_ALL=1 as .ci/run sets, fail) unless `condition` holds."""
    if condition:
        return
    if os.environ.get("DREAM_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (DREAM_REQUIRE_ALL=1: CI must have it; see .ci/run)")
    pytest.skip(reason)
