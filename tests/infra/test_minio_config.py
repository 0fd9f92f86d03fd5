"""infra/minio/minio.env against what doclane declares: MinIO re-declares
its exchange on every send, so exchange name, type, durability, auto-delete
and routing key must equal doclane's (functions/minio.py AMQP); the webhook
target must point at doclane's endpoint."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from doclane.functions import minio
from doclane.functions.minio_webhook import PATH

MINIO_DIR = Path(__file__).parents[2] / "infra" / "minio"


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments and blank lines skipped (the env_file format)."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() == key and key.isupper(), f"{path.name}:{number}: not KEY=VALUE: {line!r}"
        env[key] = value
    return env


ENV = read_env(MINIO_DIR / "minio.env")


def test_the_amqp_target_matches_doclanes_declaration():
    url = ENV["MINIO_NOTIFY_AMQP_URL_DOCLANE"]
    expected = minio.minio_amqp_env(minio.AMQP, target_id="DOCLANE", url=url)
    amqp = {k: v for k, v in ENV.items() if k.startswith("MINIO_NOTIFY_AMQP_")}
    assert amqp == expected
    assert urlsplit(url).scheme == "amqp"


def test_the_declaration_is_what_a_durable_notification_path_needs():
    assert minio.AMQP.durable and not minio.AMQP.auto_deleted and not minio.AMQP.internal
    assert minio.AMQP.exchange_type in ("fanout", "direct", "topic")
    assert minio.AMQP.delivery_mode == 2


def test_the_webhook_target_points_at_the_ingest_endpoint_with_a_token():
    assert ENV["MINIO_NOTIFY_WEBHOOK_ENDPOINT_DOCLANE"].endswith(PATH)
    assert ENV["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_DOCLANE"]
    assert ENV["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_DOCLANE"].startswith("/")  # MinIO wants an absolute queue_dir


def test_the_readme_shows_the_same_values_and_the_mc_commands():
    readme = (MINIO_DIR / "README.md").read_text()
    for key, value in ENV.items():
        if key.startswith("MINIO_NOTIFY_AMQP_") and "URL" not in key and "PASSWORD" not in value:
            assert f"{key}={value}" in readme, key
    assert "mc event add local/documents arn:minio:sqs::DOCLANE:amqp --event put,delete" in readme
    assert "mc event add local/documents arn:minio:sqs::DOCLANE:webhook --event put,delete" in readme
