"""Test-wide settings: caches of feature extractors and reference features go to a temporary folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Never read or write the user's ~/.cache/genlab from tests."""
    old = os.environ.get("GENLAB_CACHE")
    os.environ["GENLAB_CACHE"] = str(tmp_path_factory.mktemp("genlab-cache"))
    yield
    if old is None:
        os.environ.pop("GENLAB_CACHE", None)
    else:
        os.environ["GENLAB_CACHE"] = old
