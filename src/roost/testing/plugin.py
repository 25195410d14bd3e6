"""The pytest plugin of ``roost.testing`` (registered as the ``roost`` entry point).

Fixtures:

``roost_objects``
    Override it: return your bindings, e.g. ``{"COUNTER": Counter}``.
``roost_clock``
    A fresh :class:`~roost.testing.ManualClock`.
``roost_data_dir``
    A fresh temporary directory for durable storage.
``roost_runtime``
    A started :class:`~roost.Runtime` of ``roost_objects`` on ``roost_data_dir``
    and ``roost_clock``; closed after the test.
``roost_env``
    ``roost_runtime.env``.
``roost_runtime_factory``
    ``await factory(objects=None, **options)`` makes more runtimes (say, to
    restart on the same ``roost_data_dir``); each is closed after the test.

The async fixtures need ``pytest-asyncio`` (``pip install roost[testing]``).
An ``async def`` test that uses any ``roost_*`` fixture runs on asyncio
whatever ``asyncio_mode`` is set (its default, "strict", runs only tests marked
``@pytest.mark.asyncio``): the plugin marks it, so that tests written as
``docs/testing.md`` shows work without configuration.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ..object import DurableObject
from ..runtime.clock import ManualClock
from ..runtime.namespace import Env
from ..runtime.runtime import Runtime

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the kit's async fixtures then explain
    pytest_asyncio = None  # type: ignore[assignment]

RuntimeFactory = Callable[..., Awaitable[Runtime]]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, None]:
    # trylast: the innermost wrapper, so the mark is on the items before
    # pytest-asyncio's own wrapper decides which items are asyncio tests.
    outcome = yield
    if pytest_asyncio is None or not inspect.iscoroutinefunction(obj):
        return
    try:
        result = outcome.get_result()
    except BaseException:
        return  # pytest reports the collection error itself
    items = result if isinstance(result, list) else [result]
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and item.get_closest_marker("asyncio") is None
            and any(name.startswith("roost_") for name in item.fixturenames)
        ):
            item.add_marker(pytest.mark.asyncio)


@pytest.fixture
def roost_objects() -> Mapping[str, type[DurableObject]]:
    """Your bindings: override this fixture in your conftest.py or test module."""
    raise pytest.UsageError(
        "define a `roost_objects` fixture that returns your bindings, e.g. "
        '`return {"COUNTER": Counter}`, to use roost_runtime / roost_env'
    )


@pytest.fixture
def roost_clock() -> ManualClock:
    """A virtual clock: time moves only with ``await advance(runtime, seconds)``."""
    return ManualClock()


@pytest.fixture
def roost_data_dir(tmp_path: Path) -> Path:
    """A fresh directory for the runtime's durable storage."""
    return tmp_path / "roost-data"


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def roost_runtime_factory(
        roost_objects: Mapping[str, type[DurableObject]],
        roost_data_dir: Path,
        roost_clock: ManualClock,
    ) -> AsyncIterator[RuntimeFactory]:
        """Make started runtimes (default: ``roost_objects`` on ``roost_data_dir``
        with ``roost_clock``); all are closed after the test."""
        made: list[Runtime] = []

        async def factory(
            objects: Mapping[str, type[DurableObject]] | None = None, **options: Any
        ) -> Runtime:
            options.setdefault("data_dir", roost_data_dir)
            options.setdefault("clock", roost_clock)
            runtime = Runtime(roost_objects if objects is None else objects, **options)
            await runtime.start()
            made.append(runtime)
            return runtime

        yield factory
        for runtime in reversed(made):
            await runtime.close()

    @pytest_asyncio.fixture
    async def roost_runtime(roost_runtime_factory: RuntimeFactory) -> Runtime:
        """A started runtime of ``roost_objects`` on fresh temporary storage."""
        return await roost_runtime_factory()

    @pytest_asyncio.fixture
    async def roost_env(roost_runtime: Runtime) -> Env:
        """The ``env`` of ``roost_runtime``: ``roost_env.COUNTER.get_by_name(...)``."""
        return roost_runtime.env

else:  # pragma: no cover

    @pytest.fixture
    def roost_runtime_factory() -> None:
        """Needs pytest-asyncio."""
        raise pytest.UsageError("roost.testing's runtime fixtures need pytest-asyncio")

    roost_runtime = roost_env = roost_runtime_factory
