"""Finding the app: ``FILE_OR_MODULE[:ATTR]`` to a :class:`roost.App`.

``FILE_OR_MODULE`` is a ``.py`` file, a package directory (with
``__init__.py``), or a dotted module name importable from the current
directory.  ``ATTR`` names the app in it (default ``app``; without one, the
module's only ``App``); an attribute that is a function is called to make it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..object import DurableObject
from ..server import App

__all__ = ["AppNotFound", "LoadedApp", "app_from_environ", "load_app", "load_module"]

#: Environment variables through which `roost dev` tells its reloading worker
#: process what to load (the worker imports ``app_from_environ``).
ENV_TARGET = "ROOST_APP"
ENV_DATA = "ROOST_DATA_DIR"
#: The settings the command line and environment gave the app, as JSON (internal).
ENV_SETTINGS = "_ROOST_DEV_APP_SETTINGS"


class AppNotFound(Exception):
    """The target names no file, no module, or no app in the module."""


@dataclass(frozen=True, slots=True)
class LoadedApp:
    app: App
    module: ModuleType
    #: The directory the app lives in: watched by `roost dev`, home of `.roost/`.
    directory: Path


def _add_path(directory: Path) -> None:
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def load_module(target: str) -> tuple[ModuleType, Path]:
    """Import the module ``target`` names; return it and its directory."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise AppNotFound(f"no such file: {target}")
        _add_path(path.parent)
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path.resolve())
        if spec is None or spec.loader is None:  # pragma: no cover - not a Python file
            raise AppNotFound(f"cannot import {target} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module, path.parent.resolve()
    if path.is_dir():
        if not (path / "__init__.py").is_file():
            raise AppNotFound(f"{target} is a directory but not a package (no __init__.py)")
        _add_path(path.resolve().parent)
        return importlib.import_module(path.resolve().name), path.resolve()
    if "/" in target or os.sep in target:
        raise AppNotFound(f"no such file or directory: {target}")
    _add_path(Path.cwd())
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and target.startswith(exc.name):
            raise AppNotFound(f"no file or module named {target!r}") from None
        raise
    file = getattr(module, "__file__", None)
    return module, Path(file).resolve().parent if file else Path.cwd()


def load_app(spec: str) -> LoadedApp:
    """Load ``FILE_OR_MODULE[:ATTR]`` (see the module docstring)."""
    target, _, attr = spec.partition(":")
    if not target:
        raise AppNotFound("give a file, package directory or module, e.g. examples/counter.py")
    module, directory = load_module(target)
    if attr:
        if not hasattr(module, attr):
            raise AppNotFound(f"{target} has no attribute {attr!r}")
        found = getattr(module, attr)
    elif isinstance(getattr(module, "app", None), App):
        found = module.app
    else:
        apps = [v for v in vars(module).values() if isinstance(v, App)]
        if len(apps) != 1:
            what = "no roost.App" if not apps else f"{len(apps)} roost.App objects"
            raise AppNotFound(
                f"{target} has {what} at module level; name one as {target}:NAME (or call it `app`)"
            )
        found = apps[0]
    name = attr or "app"
    if isinstance(found, type):
        hint = (
            f"; wrap it in one, e.g. app = roost.App({{{found.__name__.upper()!r}: "
            f"{found.__name__}}}, fetch=...)"
            if issubclass(found, DurableObject)
            else ""
        )
        raise AppNotFound(f"{target}:{name} is the class {found.__name__}, not a roost.App{hint}")
    if callable(found) and not isinstance(found, App):
        found = found()  # a factory
    if not isinstance(found, App):
        raise AppNotFound(f"{target}:{name} is a {type(found).__name__}, not a roost.App")
    return LoadedApp(found, module, directory)


def app_from_environ() -> App:
    """The app `roost dev` asked for, with its data directory and settings (reload worker)."""
    from .config import apply_to_app  # imports the server: only in the worker

    loaded = load_app(os.environ[ENV_TARGET])
    apply_to_app(loaded.app, json.loads(os.environ.get(ENV_SETTINGS) or "{}"))
    data = os.environ.get(ENV_DATA)
    if data:
        loaded.app.data_dir = data
    return loaded.app
