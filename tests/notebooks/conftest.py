"""Fixtures for the notebook tests (the notebook list itself is in tests/notebook_factory.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kernel() -> str:
    """The project kernel (``slimkit``, this interpreter), installed into the venv if missing."""
    from slimkit.runs.runner import ensure_kernel

    return ensure_kernel()
