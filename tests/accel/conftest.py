"""Fixtures for the accel tests: a per-session inductor cache (never the shared temp folder)."""
from __future__ import annotations

import os

import pytest

@pytest.fixture(scope="session")
def inductor_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("inductor")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    yield str(path)
    if before is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
