"""The uvicorn versions Roost's HTTP protocol is tested with, and the run against the lowest.

``roost.server._http1`` imports uvicorn internals, so it is tested with both ends of the
range pyproject.toml allows (:data:`~roost.server._http1.UVICORN_VERSIONS`): the newest
in the venv, the lowest in ``.venv/uvicorn-lowest`` (both put there by scripts/install).
A uvicorn release that comes into the range, or a range changed without the pins, fails
here with what to do, before anyone serves with it untested.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Final

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from roost.server._http1 import UVICORN_VERSIONS

ROOT: Final = Path(__file__).resolve().parents[2]
LOWEST_DIR: Final = ROOT / ".venv" / "uvicorn-lowest"
LOWEST, NEWEST = (Version(v) for v in UVICORN_VERSIONS)
#: The suites run again against the lowest uvicorn.
SUITES: Final = ("tests/server/test_http_parity.py", "tests/server/test_http1.py")


def uvicorn_requirement() -> Requirement:
    with open(ROOT / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    return next(Requirement(d) for d in dependencies if Requirement(d).name == "uvicorn")


def lowest_distribution() -> importlib.metadata.Distribution:
    if not (LOWEST_DIR / "uvicorn").is_dir():
        pytest.fail(f"{LOWEST_DIR} holds no uvicorn: run scripts/install")
    (found,) = importlib.metadata.distributions(name="uvicorn", path=[str(LOWEST_DIR)])
    return found


def test_the_pins_are_the_ends_of_pyprojects_range() -> None:
    specifier = uvicorn_requirement().specifier
    lower = [Version(s.version) for s in specifier if s.operator == ">="]
    assert lower == [LOWEST], (
        f"pyproject.toml allows uvicorn {specifier}, but roost.server._http1 is tested "
        f"from {LOWEST}: make UVICORN_VERSIONS[0] the range's lower bound"
    )
    assert NEWEST in specifier, (
        f"UVICORN_VERSIONS[1] ({NEWEST}) is outside pyproject.toml's uvicorn{specifier}"
    )


def test_the_venv_has_the_newest_tested_uvicorn() -> None:
    installed = Version(importlib.metadata.version("uvicorn"))
    assert installed == NEWEST, (
        f"uvicorn {installed} is installed, but roost.server._http1 (which imports uvicorn "
        f"internals) is tested with {LOWEST} and {NEWEST} only. If scripts/install "
        f"brought a new release: run tests/server, then set UVICORN_VERSIONS[1] to "
        f"{installed} (or exclude it in pyproject.toml's range). Otherwise: run "
        f"scripts/install."
    )


def test_the_lowest_directory_holds_the_lowest_uvicorn_and_the_venv_meets_its_needs() -> None:
    lowest = lowest_distribution()
    assert Version(lowest.version) == LOWEST, (
        f"{LOWEST_DIR} holds uvicorn {lowest.version}, not {LOWEST}: run scripts/install"
    )
    # Only uvicorn itself is there: what it requires must come from the venv.
    unmet = []
    for line in lowest.requires or ():
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and not marker.evaluate({"extra": "standard"}):
            continue
        try:
            have = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{requirement} (missing)")
            continue
        if not requirement.specifier.contains(have, prereleases=True):
            unmet.append(f"{requirement} (the venv has {have})")
    assert not unmet, (
        f"uvicorn {LOWEST} needs what the venv does not have: {unmet}; install it into "
        f"{LOWEST_DIR} too (scripts/install)"
    )


@pytest.mark.integration
def test_the_http_suites_pass_with_the_lowest_uvicorn() -> None:
    lowest_distribution()  # (a clear failure when it is missing)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(LOWEST_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # The process that ran the suites then reports the uvicorn they imported
    # (imported after pytest, whose plugins must come first).
    code = (
        "import sys, pytest\n"
        "status = pytest.main(['-q', '-p', 'no:cacheprovider', *sys.argv[1:]])\n"
        "uvicorn = sys.modules['uvicorn']\n"
        "print('uvicorn', uvicorn.__version__, uvicorn.__file__, flush=True)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *SUITES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    output = result.stdout + result.stderr
    imported = re.search(r"^uvicorn (\S+) (\S+)$", result.stdout, re.MULTILINE)
    assert imported is not None, output
    version, path = imported.groups()
    assert Version(version) == LOWEST, output
    assert Path(path).is_relative_to(LOWEST_DIR), output
    assert result.returncode == 0, output
    summary = result.stdout.strip().splitlines()[-2]  # (the last line names uvicorn)
    assert re.search(r"^\d+ passed", summary), output
    assert not re.search(r"\d+ (failed|errors?)\b", summary), output
