"""infra/compose/docker-compose.yml, checked without Docker (`docker compose
config` is not available where doclane is developed): it parses, every
doclane setting it sets exists, and the services agree on the credentials
and names they share with infra/minio/minio.env."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from doclane.functions.settings import Settings
from tests.infra.test_minio_config import read_env

ROOT = Path(__file__).parents[2]
COMPOSE_DIR = ROOT / "infra" / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCLANE = SERVICES["doclane"]["environment"]
KNOWN = {f"DOCLANE_{name.upper()}" for name in Settings.model_fields} | {"OLLAMA_HOST"}
AWS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


def env_of(service: dict) -> dict[str, str]:
    env = dict(service.get("environment") or {})
    for path in service.get("env_file") or []:
        env.update(read_env(COMPOSE_DIR / path))
    return {k: str(v) for k, v in env.items()}


def test_the_full_stack_is_there():
    assert {"rabbitmq", "minio", "postgres", "opensearch", "redis", "ollama", "doclane"} <= set(SERVICES)
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        for dep in service.get("depends_on") or {}:
            assert dep in SERVICES, f"{name} depends on unknown {dep}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_doclane_variable_is_a_known_setting(name):
    unknown = {k for k in env_of(SERVICES[name]) if k.startswith(("DOCLANE_", "OLLAMA_")) and k not in KNOWN}
    assert not unknown, f"{name}: {unknown} are not settings in functions/settings.py"


def test_doclane_uses_every_production_system():
    for var in ("DOCLANE_AMQP_URL", "DOCLANE_DATABASE_URL", "DOCLANE_S3_ENDPOINT_URL", "DOCLANE_S3_BUCKET",
                "DOCLANE_OPENSEARCH_URL", "OLLAMA_HOST", "DOCLANE_REDIS_URL", *AWS):
        assert DOCLANE.get(var), var
    hosts = {var: urlsplit(DOCLANE[var]).hostname for var in
             ("DOCLANE_AMQP_URL", "DOCLANE_DATABASE_URL", "DOCLANE_S3_ENDPOINT_URL", "DOCLANE_OPENSEARCH_URL",
              "OLLAMA_HOST", "DOCLANE_REDIS_URL")}
    assert hosts == {"DOCLANE_AMQP_URL": "rabbitmq", "DOCLANE_DATABASE_URL": "postgres",
                     "DOCLANE_S3_ENDPOINT_URL": "minio", "DOCLANE_OPENSEARCH_URL": "opensearch",
                     "OLLAMA_HOST": "ollama", "DOCLANE_REDIS_URL": "redis"}


def test_the_environment_is_valid_for_doclane(monkeypatch):
    for var in list(KNOWN):
        monkeypatch.delenv(var, raising=False)
    for var, value in DOCLANE.items():
        monkeypatch.setenv(var, str(value))
    settings = Settings()
    assert settings.s3 and settings.amqp_url and settings.database_url.startswith("postgresql://")


def test_credentials_agree_between_services():
    rabbit, postgres, minio = (env_of(SERVICES[n]) for n in ("rabbitmq", "postgres", "minio"))
    amqp = urlsplit(DOCLANE["DOCLANE_AMQP_URL"])
    assert (amqp.username, amqp.password) == (rabbit["RABBITMQ_DEFAULT_USER"], rabbit["RABBITMQ_DEFAULT_PASS"])
    minio_amqp = urlsplit(minio["MINIO_NOTIFY_AMQP_URL_DOCLANE"])
    assert (minio_amqp.hostname, minio_amqp.username, minio_amqp.password) == ("rabbitmq", amqp.username, amqp.password)
    pg = urlsplit(DOCLANE["DOCLANE_DATABASE_URL"])
    assert (pg.username, pg.password, pg.path.lstrip("/")) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    assert (DOCLANE["AWS_ACCESS_KEY_ID"], DOCLANE["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert DOCLANE["DOCLANE_MINIO_WEBHOOK_TOKEN"] == minio["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_DOCLANE"]


def test_the_bucket_setup_subscribes_the_configured_bucket_to_the_amqp_target():
    script = " ".join(SERVICES["minio-setup"]["command"])
    bucket = DOCLANE["DOCLANE_S3_BUCKET"]
    assert f"mc mb --ignore-existing local/{bucket}" in script
    assert f"mc event add local/{bucket} arn:minio:sqs::DOCLANE:amqp --event put,delete" in script
    minio = env_of(SERVICES["minio"])
    assert f"minioadmin {minio['MINIO_ROOT_PASSWORD']}" in script
    assert SERVICES["minio"]["depends_on"]["doclane"]["condition"] == "service_healthy"  # queue bound first


def test_the_doclane_image_target_exists():
    build = SERVICES["doclane"]["build"]
    dockerfile = (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve()
    assert re.search(rf"^FROM \S+ AS {build['target']}$", dockerfile.read_text(), re.M)
