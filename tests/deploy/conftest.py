"""Shared fixtures: each variant of deploy/k8s (the base and every overlay)
and its rendered resources (see variants.py)."""

from __future__ import annotations

import pytest

from variants import VARIANTS, rendered


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture
def docs(variant) -> list[dict]:
    return rendered(variant)


@pytest.fixture
def base() -> list[dict]:
    return rendered("base")
