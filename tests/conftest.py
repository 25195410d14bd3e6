"""Shared fixtures.  ROOST_SLOW=1 runs the long versions of soak and crash tests."""

from __future__ import annotations

import os

import pytest

SLOW = os.environ.get("ROOST_SLOW") == "1"


def scaled(quick: int, full: int) -> int:
    """A count for a soak/fault loop: bounded in CI, larger with ROOST_SLOW=1."""
    return full if SLOW else quick


@pytest.fixture
def data_dir(tmp_path: os.PathLike[str]) -> str:
    path = os.path.join(tmp_path, "data")
    os.makedirs(path)
    return path
