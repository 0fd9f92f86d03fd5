"""Configuration: environment variables (DOCLANE_*), optionally a config file
(DOCLANE_CONFIG, YAML with the same names in lower case, without prefix).
A setting left empty means "use the embedded default"."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from doclane.functions.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCLANE_", extra="ignore")

    # where the embedded defaults keep their state
    data_dir: Path = Path(".doclane")
    inbox: Path = Path("inbox")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)

    # production systems; empty = embedded default
    amqp_url: str | None = None
    database_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_artefact_bucket: str | None = None  # parsed documents; default: the document bucket under .doclane/artefacts/
    minio_webhook_token: str | None = None  # Bearer token MinIO's webhook target sends to /notifications/minio
    opensearch_url: str | None = None
    ollama_host: str | None = Field(None, validation_alias=AliasChoices("OLLAMA_HOST", "DOCLANE_OLLAMA_HOST"))
    redis_url: str | None = None

    # RabbitMQ details (functions/adapters/rabbitmq_bus.py, minio_amqp.py)
    broker: str = Field("doclane", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")  # prefix of exchange and queue names
    minio_amqp_exchange: str | None = None  # MinIO's MINIO_NOTIFY_AMQP_EXCHANGE; set = consume its notifications
    minio_amqp_exchange_type: Literal["direct", "fanout", "topic"] = "fanout"  # = MINIO_NOTIFY_AMQP_EXCHANGE_TYPE
    minio_amqp_durable: bool = True  # = MINIO_NOTIFY_AMQP_DURABLE (set it on: MinIO's default is off)
    minio_amqp_routing_key: str = "bucketevents"  # = MINIO_NOTIFY_AMQP_ROUTING_KEY
    minio_amqp_queue: str | None = None  # default: <broker>.minio-notifications

    # OpenSearch and Ollama details (functions/adapters/opensearch_index.py, ollama_models.py)
    opensearch_index: str = "doclane-chunks"
    opensearch_verify_certs: bool = True
    ollama_model: str = "llama3.2"  # classification and extraction
    ollama_embed_model: str = "nomic-embed-text"  # used when DOCLANE_EMBEDDER=ollama
    ollama_timeout: float = Field(120.0, gt=0)  # seconds per call (a CPU-only model is slow)
    ollama_retries: int = Field(2, ge=0)  # extra attempts, with back-off, before the fallback policy applies
    ollama_fallback: Literal["embedded", "fail"] = "fail"  # Ollama unreachable: embedded adapters, or Retryable
    embedder: Literal["minilm", "ollama"] = "minilm"

    # behaviour
    categories: str | None = None  # path to a categories YAML
    duplicate_policy: Literal["skip", "reprocess", "allow"] = "skip"
    parse_timeout: float = Field(60.0, gt=0)
    max_file_mb: float = Field(100.0, gt=0)
    idle_seconds: float = Field(30.0, gt=0)  # a function process with no work for this long exits
    max_attempts: int = Field(5, ge=1)
    retry_backoff: float = Field(1.0, gt=0)
    search_fusion: Literal["minmax", "rrf"] = "minmax"
    webhook_urls: str = ""  # comma-separated; registered at start
    webhook_secret: str | None = None  # whsec_...; generated and kept in data_dir when empty
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_allow_private: bool = True  # loopback receivers are the local use case
    # OpenFaaS: its connectors drop a function's HTTP reply, so the next events
    # are published to the bus (DOCLANE_AMQP_URL) instead; Knative keeps replies.
    reply_via_bus: bool = False

    # access to the HTTP API and dashboard (functions/auth.py)
    api_key: str | None = None  # accepted as an admin key (scripts, tests, the first login)
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: str | None = None  # HS256 shared secret; JWTs are refused when neither this nor the key is set
    jwt_public_key: str | None = None  # RS256: PEM text or the path of a PEM file
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    rate_limit: float = Field(20.0, gt=0)  # requests per second per key (token bucket refill)
    rate_burst: int = Field(100, ge=1)  # bucket size
    session_secret: str | None = None  # signs dashboard cookies; generated into data_dir when empty
    session_secure: bool = True  # Secure cookies (browsers accept them from http://127.0.0.1 and localhost)
    function_token: str | None = None  # shared Bearer token for stage functions' own CloudEvents apps
    ws_port: int = Field(0, ge=0, le=65535)  # WebSocket port of `doclane up`; 0 = the HTTP port + 1

    @field_validator("amqp_url", "database_url", "s3_endpoint_url", "s3_bucket", "opensearch_url",
                     "ollama_host", "redis_url", "categories", "webhook_secret", "s3_artefact_bucket",
                     "minio_amqp_exchange", "minio_amqp_queue",
                     "minio_webhook_token", "api_key", "jwt_secret", "jwt_public_key", "jwt_audience", "jwt_issuer",
                     "session_secret", "function_token", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must start with postgresql:// (or sqlite:/// for a file)")
        return v

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlFile(settings_cls))

    @property
    def s3(self) -> bool:
        """Documents live in an S3/MinIO bucket (not the inbox folder)."""
        return bool(self.s3_endpoint_url or self.s3_bucket)

    # derived paths of the embedded defaults
    @property
    def bus_path(self) -> Path:
        return self.data_dir / "bus.sqlite"

    @property
    def metadata_path(self) -> Path:
        return self.data_dir / "metadata.sqlite"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite"

    @property
    def artefact_dir(self) -> Path:
        return self.data_dir / "artefacts"


class _YamlFile(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - required by the ABC
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("DOCLANE_CONFIG")
        if not path:
            return {}
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"DOCLANE_CONFIG={path}: no such file")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"DOCLANE_CONFIG={path}: expected a mapping of setting: value")
        return data


def load(**overrides: Any) -> Settings:
    """Settings from the environment (and config file), with `overrides` from
    the command line. Bad values become one ConfigError line that names the
    variable and what to change."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        var = "OLLAMA_HOST" if name == "ollama_host" else f"DOCLANE_{name.upper()}"
        raise ConfigError(f"{var}={err.get('input')!r} is not valid: {err['msg']}") from None
