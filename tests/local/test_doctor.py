"""`doclane doctor` against the PostgreSQL, RabbitMQ and Redis running here,
moto's S3 server on loopback, and a closed port (each system fails with
what to do). OpenSearch and Ollama cannot run here: only their failure lines
are exercised."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from doclane.local import doctor
from doclane.local.cli import main
from tests.conftest import require
from tests.e2e.harness import MotoS3, free_port

PG_URL = os.environ.get("DOCLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("DOCLANE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("DOCLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SYSTEMS = ("rabbitmq", "postgresql", "s3", "opensearch", "ollama", "redis")


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def env(settings, monkeypatch):
    """A clean environment (no DOCLANE_* from the caller) with the test's data dir."""
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.setenv("DOCLANE_DATA_DIR", str(settings.data_dir))
    return monkeypatch


def doctor_cli(*args: str):
    result = CliRunner().invoke(main, ["doctor", "--timeout", "3", *args])
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.strip()}
    return result.exit_code, lines


def test_nothing_configured_is_all_embedded_and_passes(env):
    code, lines = doctor_cli()
    assert code == 0, lines
    for system in SYSTEMS:
        assert lines[system].startswith("embedded"), lines[system]
    assert "set DOCLANE_AMQP_URL" in lines["rabbitmq"] and "bus.sqlite" in lines["rabbitmq"]
    for default in ("data", "embeddings", "parser"):  # "data dir" is keyed by its first word
        assert lines[default].startswith("ok "), lines[default]
    assert re.search(r"Docling \d+\.\d+", lines["parser"])


def test_the_running_services_are_ok_with_their_versions(env):
    for url in (PG_URL, AMQP_URL, REDIS_URL):
        require(reachable(url), f"{url} is not reachable")
    env.setenv("DOCLANE_DATABASE_URL", PG_URL)
    env.setenv("DOCLANE_AMQP_URL", AMQP_URL)
    env.setenv("DOCLANE_REDIS_URL", REDIS_URL)
    code, lines = doctor_cli()
    assert code == 0, lines
    assert re.match(r"ok   postgresql  postgresql://\S+ \(PostgreSQL \d+\.\d+\)$", lines["postgresql"])
    assert re.match(r"ok   rabbitmq    amqp://guest@\S+ \(RabbitMQ \d+\.\d+\.\d+\)$", lines["rabbitmq"])
    assert re.match(r"ok   redis       redis://\S+ \(Redis \d+\.\d+\.\d+\)$", lines["redis"])
    assert ":guest@" not in lines["rabbitmq"]  # no password in the output


def test_a_closed_port_fails_each_system_with_the_fix(env):
    closed = free_port()
    env.setenv("DOCLANE_DATABASE_URL", f"postgresql://postgres:secret@127.0.0.1:{closed}/test")
    env.setenv("DOCLANE_AMQP_URL", f"amqp://guest:secret@127.0.0.1:{closed}/")
    env.setenv("DOCLANE_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    env.setenv("DOCLANE_OPENSEARCH_URL", f"http://127.0.0.1:{closed}")
    env.setenv("OLLAMA_HOST", f"127.0.0.1:{closed}")
    env.setenv("DOCLANE_S3_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    env.setenv("DOCLANE_S3_BUCKET", "docs")
    env.setenv("AWS_ACCESS_KEY_ID", "x")
    env.setenv("AWS_SECRET_ACCESS_KEY", "y")
    started = time.monotonic()
    code, lines = doctor_cli()
    assert time.monotonic() - started < 10  # checked side by side, each with its time-out
    assert code == 1
    fixes = {"rabbitmq": "unset DOCLANE_AMQP_URL", "postgresql": "unset DOCLANE_DATABASE_URL",
             "redis": "unset DOCLANE_REDIS_URL", "opensearch": "unset DOCLANE_OPENSEARCH_URL",
             "ollama": "unset OLLAMA_HOST", "s3": "unset DOCLANE_S3_ENDPOINT_URL"}
    for system, fix in fixes.items():
        line = lines[system]
        assert line.startswith(f"FAIL {system}") and f":{closed}" in line, line
        assert "connection refused — is " in line and fix in line, line
        assert "secret" not in line


def test_s3_on_moto_and_a_missing_bucket(env):
    moto = MotoS3()
    try:
        for name, value in moto.env.items():
            env.setenv(name, value)
        env.setenv("DOCLANE_S3_BUCKET", moto.bucket(f"doctor-{uuid.uuid4().hex[:10]}"))
        code, lines = doctor_cli()
        assert code == 0 and re.match(r"ok   s3 +http://127\.0\.0\.1:\d+ \(bucket doctor-\w+ reachable\)$", lines["s3"])
        env.setenv("DOCLANE_S3_BUCKET", "not-created-yet")
        code, lines = doctor_cli()
        assert code == 1 and "bucket 'not-created-yet' does not exist" in lines["s3"] and "mc mb" in lines["s3"]
    finally:
        moto.stop()


def test_an_unwritable_data_dir_fails_with_the_fix(settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    lines = doctor.run(settings.model_copy(update={"data_dir": blocker / "data"}), timeout=1)
    line = next(line for line in lines if line.system == "data dir")
    assert line.status == "FAIL" and "DOCLANE_DATA_DIR" in line.text
    assert doctor.failed(lines)


@pytest.mark.parametrize("url, shown", [
    ("amqp://guest:guest@host:5672/%2F", "amqp://guest@host:5672/%2F"),
    ("redis://:pw@host:6379/0", "redis://host:6379/0"),
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
])
def test_redact(url, shown):
    assert doctor.redact(url) == shown


@pytest.mark.parametrize("host, url", [
    ("127.0.0.1", "http://127.0.0.1:11434"), ("0.0.0.0:9999", "http://127.0.0.1:9999"),
    ("https://ollama.example:443/", "https://ollama.example:443"),
])
def test_ollama_url(host, url):
    assert doctor.ollama_url(host) == url


def test_the_http_bus_says_where_events_go(env):
    env.setenv("DOCLANE_BROKER_URL", "http://broker-ingress.knative-eventing.svc/doclane/doclane")
    code, lines = doctor_cli()
    assert code == 0, lines
    assert lines["rabbitmq"].startswith("off"), lines["rabbitmq"]
    assert "broker-ingress.knative-eventing.svc" in lines["rabbitmq"] and "DOCLANE_BUS=http" in lines["rabbitmq"]
