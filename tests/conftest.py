"""Shared test setup: long runs marked ``slow`` only run with ROOST_SLOW=1."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ROOST_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long run: set ROOST_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
