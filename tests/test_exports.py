"""The public API is exactly what roost.__all__ lists, and each name is documented."""

from __future__ import annotations

import roost


def test_all_names_exist_and_are_documented() -> None:
    for name in roost.__all__:
        obj = getattr(roost, name)
        if name.startswith("__"):
            continue
        assert obj.__doc__, f"roost.{name} has no docstring"


def test_no_private_module_leaks() -> None:
    # "@..." names come from pytest rewriting the package of its roost.testing plugin.
    public = {n for n in dir(roost) if not n.startswith(("_", "@"))}
    modules = {
        "admin", "cli", "codec", "errors", "http", "ids", "object", "runtime", "server", "storage",
        "testing",
    }  # fmt: skip
    assert public - modules - {"annotations"} <= set(roost.__all__)
