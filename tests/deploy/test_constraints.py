"""constraints.txt pins what the image and every venv install: each runtime dependency exactly, within the ranges
pyproject.toml allows, and the pinned azure-servicebus is one the SDK patches were verified with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sbworker import patches

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exactly: {line!r}"
            found[canonicalize_name(name)] = version
    return found


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["local"]]


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in runtime_requirements():
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in constraints.txt"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name}=={version} is not " \
                                                                            f"within {requirement.specifier}"


@pytest.mark.parametrize("sdk", sorted(patches.VERIFIED))
def test_each_pinned_sdk_is_one_its_patches_were_verified_with(sdk: str) -> None:
    assert patches.verified(sdk, pins()[sdk])


def test_the_image_and_the_venv_install_through_the_constraints() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"COPY [^\n]*constraints\.txt", dockerfile)
    assert re.search(r"pip wheel [^\n]*--constraint constraints\.txt", dockerfile)
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*--constraint constraints\.txt -e '\.\[dev\]'", makefile)
