"""Shared fixtures. Real services are used where this machine runs them;
when one is unreachable its tests skip on a laptop and fail in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One ONNX export of MiniLM per checkout (functions/adapters/onnx_embedder.py), shared by every
# test's data dir and inherited by the `doclane up` children of the e2e tests: without it each
# fresh data dir would export the model again (torch + ~10 s) on its first embedding.
os.environ.setdefault("DOCLANE_ONNX_DIR", str(Path(__file__).resolve().parents[1] / ".doclane" / "models"))

FIXTURES = Path(__file__).parent / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip outside CI, fail inside it: CI must never skip a real-service test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _environment_is_restored():
    """`doclane up`'s Runtime exports its settings to os.environ for the
    function processes it starts; run in-process by a test, that would leak
    DOCLANE_* values into every later test. Each test gets the environment
    back as it found it."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def settings(tmp_path, monkeypatch):
    from doclane.functions.settings import load

    for var in list(os.environ):
        if var.startswith("DOCLANE_") and var != "DOCLANE_ONNX_DIR":  # the one shared export stays
            monkeypatch.delenv(var, raising=False)
    return load(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", retry_backoff=0.05, max_attempts=3,
                idle_seconds=2)


@pytest.fixture(scope="module")
def moto():
    """A real HTTP S3 API (moto's server) on 127.0.0.1, one per test module."""
    from tests.e2e.harness import MotoS3

    server = MotoS3()
    yield server
    server.stop()
