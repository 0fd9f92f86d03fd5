"""Configuration: environment variables (DOCLANE_*), optionally a config file
(DOCLANE_CONFIG, YAML with the same names in lower case, without prefix).
A setting left empty means "use the embedded default"."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
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
    # The broker ingress DOCLANE_BUS=http POSTs events to (functions/adapters/http_bus.py); default
    # K_SINK, which Knative's SinkBinding injects (infra/knative/services.yaml)
    broker_url: str | None = None
    k_sink: str | None = Field(None, validation_alias=AliasChoices("K_SINK"))
    # The event bus: sqlite (embedded), rabbitmq (DOCLANE_AMQP_URL), redis (Redis Streams on
    # DOCLANE_REDIS_URL) or http (publish only: CloudEvents POSTed to a broker ingress, Knative).
    # Empty: rabbitmq when DOCLANE_AMQP_URL is set, else http when K_SINK or DOCLANE_BROKER_URL
    # is, else sqlite (see bus_kind).
    bus: Literal["sqlite", "rabbitmq", "redis", "http"] | None = None

    # Redis Streams bus details (functions/adapters/redis_bus.py); never trims an unsettled entry
    redis_stream_maxlen: int = Field(10_000, ge=0)  # history kept per trigger stream, about (XTRIM MAXLEN ~); 0 = no cap
    redis_stream_max_age: float = Field(0.0, ge=0)  # seconds of history kept (XTRIM MINID ~); 0 = no age limit
    redis_dedup_seconds: float = Field(7 * 86400.0, ge=1)  # how long a published event id is remembered

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
    # MiniLM's runtime (functions/adapters/minilm.py, onnx_embedder.py): ONNX fp32 gives torch's
    # vectors faster; int8 is faster still but moved SciFact nDCG@10 by 0.005 (docs/QUALITY.md)
    embedder_backend: Literal["torch", "onnx", "onnx-int8"] = "onnx"
    onnx_dir: Path | None = None  # where the exported ONNX model lives; default: <data dir>/models

    # behaviour
    categories: str | None = None  # path to a categories YAML
    duplicate_policy: Literal["skip", "reprocess", "allow"] = "skip"
    parse_timeout: float = Field(60.0, gt=0)
    max_file_mb: float = Field(100.0, gt=0)
    # bad input (functions/limits.py): ZIP-based documents (DOCX, XLSX, PPTX) are
    # checked before a parser unpacks them; an event larger than this is refused
    max_unpacked_mb: float = Field(1024.0, gt=0)  # total uncompressed size, nested archives included
    max_zip_entries: int = Field(10000, ge=1)
    max_zip_ratio: float = Field(100.0, gt=1)  # uncompressed/compressed size of one entry (over 1 MiB)
    max_event_kb: int = Field(1024, ge=1)  # one CloudEvent over HTTP or on the bus
    idle_seconds: float = Field(30.0, gt=0)  # a function process with no work for this long exits
    # `doclane up`: a function's process count follows its backlog (local/supervisor.py):
    # ceil(waiting events / target_backlog), within min..max; the last process leaves when idle
    min_processes: int = Field(0, ge=0)  # per function, kept even when idle
    max_processes: int = Field(2, ge=1)  # per function
    target_backlog: int = Field(5, ge=1)  # waiting events per process
    processes: str = ""  # per-function overrides, "classify=0-4/10,index=1": name=[min-]max[/target]
    scale_down_seconds: float = Field(10.0, gt=0)  # more processes than the backlog needs this long: one leaves
    # Fewer processes than the backlog needs this long: the others start. The first (and the
    # minimum) start at once; the extra ones only for a backlog that lasts, because each cold
    # process loads its models on the same cores (a short burst is done before it is ready).
    scale_up_seconds: float = Field(5.0, ge=0)
    max_attempts: int = Field(5, ge=1)
    retry_backoff: float = Field(1.0, gt=0)
    search_fusion: Literal["minmax", "zscore", "rrf"] = "minmax"  # hybrid search (embedded_index.py)
    search_semantic_weight: float = Field(0.5, ge=0.0, le=1.0)  # the semantic side's weight in minmax/zscore
    # hybrid search: pseudo-relevance feedback (Rocchio) from that many top documents (0: off), and its weight
    search_prf_docs: int = Field(2, ge=0)
    search_prf_weight: float = Field(0.5, ge=0.0)
    # one vector per sentence besides the chunk vectors (index time), and their share of a document's semantic score
    search_passages: bool = True
    search_passage_weight: float = Field(0.6, ge=0.0, le=1.0)
    # keyword pseudo-relevance feedback (RM3): expand a query with words of its top documents; 0: off
    # (SciFact: recall up, held-out nDCG@10 down, so off by default; docs/QUALITY.md)
    search_expand_docs: int = Field(0, ge=0)
    # tokens of a chunk's own text (within the embedder's 256); below 256, plain-text windows also carry the title
    chunk_tokens: int = Field(256, ge=16, le=512)
    webhook_urls: str = ""  # comma-separated; registered at start
    webhook_secret: str | None = None  # whsec_...; generated and kept in data_dir when empty
    webhook_timeout: float = Field(10.0, gt=0)
    # internal hosts webhooks may call (functions/urlguard.py): IPs, CIDRs, host names, *.domain
    webhook_allow: str = ""
    # e-mail subscriptions (functions/mailer.py): smtp://user:pass@host:port, smtps:// for
    # implicit TLS, ?starttls=true to upgrade a plain connection
    smtp_url: str | None = None
    smtp_from: str | None = None  # the From address of notification e-mails; default doclane@<this host>
    smtp_timeout: float = Field(20.0, gt=0)  # seconds per SMTP connection and command
    smtp_ca_file: Path | None = None  # PEM bundle to trust for the SMTP server's certificate (default: the system's)
    public_url: str | None = None  # where people reach the dashboard (e.g. https://docs.example.com): links in e-mails
    # OpenFaaS: its connectors drop a function's HTTP reply, so the next events
    # are published to the bus (DOCLANE_AMQP_URL) instead; Knative keeps replies.
    reply_via_bus: bool = False
    # Log lines as text (a console) or JSON objects with the hop's ids (a log
    # pipeline; the images set json): functions/observability/logs.py
    log_format: Literal["text", "json"] = "text"

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
    ws_port: int = Field(0, ge=0, le=65535)  # WebSocket port of `doclane up`; 0 = the HTTP port + 1 (else any free)

    @field_validator("amqp_url", "database_url", "s3_endpoint_url", "s3_bucket", "opensearch_url",
                     "ollama_host", "redis_url", "broker_url", "k_sink", "bus", "categories", "webhook_secret", "s3_artefact_bucket",
                     "minio_amqp_exchange", "minio_amqp_queue", "onnx_dir",
                     "minio_webhook_token", "api_key", "jwt_secret", "jwt_public_key", "jwt_audience", "jwt_issuer",
                     "session_secret", "function_token", "smtp_url", "smtp_from", "smtp_ca_file", "public_url",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("bus")
    @classmethod
    def _bus(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v == "http" and not (info.data.get("broker_url") or info.data.get("k_sink")):
            raise ValueError("needs K_SINK (Knative's SinkBinding sets it) or DOCLANE_BROKER_URL "
                             "(e.g. http://broker-ingress.knative-eventing.svc.cluster.local/doclane/doclane)")
        url = {"redis": "redis_url", "rabbitmq": "amqp_url"}.get(v or "")
        if url and not info.data.get(url):
            example = "redis://127.0.0.1:6379/0" if v == "redis" else "amqp://guest:guest@127.0.0.1:5672/%2F"
            raise ValueError(f"needs DOCLANE_{url.upper()} (e.g. {example})")
        return v

    @field_validator("broker_url", "k_sink")
    @classmethod
    def _broker_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (the broker's ingress)")
        return v

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow(cls, v: str) -> str:
        from doclane.functions.urlguard import AllowList

        AllowList.parse(v)  # a bad entry is a ValueError naming it
        return v

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, v: str | None) -> str | None:
        if v:
            from doclane.functions.mailer import SmtpConfig

            # ConfigError, not ValueError: its message hides the URL's password,
            # which pydantic's error (echoing the input) would print.
            SmtpConfig.parse(v, sender="doclane@localhost")
        return v

    @field_validator("smtp_from")
    @classmethod
    def _smtp_from(cls, v: str | None) -> str | None:
        if v:
            from email.utils import parseaddr

            from doclane.functions.mailer import check_address

            check_address(parseaddr(v)[1])  # ValueError: not an address
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must start with postgresql:// (or sqlite:/// for a file)")
        return v

    @field_validator("max_processes")
    @classmethod
    def _max_processes(cls, v: int, info: ValidationInfo) -> int:
        if v < info.data.get("min_processes", 0):
            raise ValueError(f"must be at least DOCLANE_MIN_PROCESSES ({info.data['min_processes']})")
        return v

    @field_validator("processes")
    @classmethod
    def _processes(cls, v: str) -> str:
        _process_overrides(v)  # raises ValueError naming the bad entry
        return v

    def process_bounds(self, function: str) -> tuple[int, int, int]:
        """(min, max, target backlog per process) of one function in `doclane up`:
        DOCLANE_PROCESSES for that function, else the global settings."""
        low, high, target = _process_overrides(self.processes).get(function, (None, None, None))
        high = self.max_processes if high is None else high
        low = min(self.min_processes, high) if low is None else low
        return low, high, target or self.target_backlog

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlFile(settings_cls))

    @property
    def bus_kind(self) -> str:
        """DOCLANE_BUS, or what the URLs imply: RabbitMQ when DOCLANE_AMQP_URL
        is set (as before DOCLANE_BUS existed); else, when there is a broker
        ingress (K_SINK, DOCLANE_BROKER_URL), the publish-only HTTP bus: a
        SQLite bus inside a Knative pod is never right, nothing consumes it;
        else the embedded SQLite bus."""
        return self.bus or ("rabbitmq" if self.amqp_url else "http" if self.broker_ingress else "sqlite")

    @property
    def broker_ingress(self) -> str | None:
        """Where DOCLANE_BUS=http POSTs events: DOCLANE_BROKER_URL (an explicit
        choice) before K_SINK (what the platform injected)."""
        return self.broker_url or self.k_sink

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

    @property
    def onnx_model_dir(self) -> Path:
        return self.onnx_dir or self.data_dir / "models"


_PROCESS_ENTRY = re.compile(r"^(?P<name>[a-z]+)=(?:(?P<min>\d+)-)?(?P<max>\d+)(?:/(?P<target>\d+))?$")


def _process_overrides(text: str) -> dict[str, tuple[int | None, int, int | None]]:
    """Parse DOCLANE_PROCESSES ("classify=0-4/10,index=1") into
    {function: (min or None, max, target or None)}."""
    from doclane.functions.runtime import STAGES  # lazy: runtime imports the event registry

    out: dict[str, tuple[int | None, int, int | None]] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        m = _PROCESS_ENTRY.match(entry)
        if m is None:
            raise ValueError(f"{entry!r}: write function=max or function=min-max/target, e.g. classify=0-4/10")
        name, low, high, target = m["name"], m["min"], int(m["max"]), m["target"]
        if name not in STAGES:
            raise ValueError(f"{entry!r}: no function {name!r}; functions: {', '.join(STAGES)}")
        if high < 1 or (low is not None and int(low) > high) or (target is not None and int(target) < 1):
            raise ValueError(f"{entry!r}: needs 1 <= max, min <= max and target >= 1")
        out[name] = (None if low is None else int(low), high, None if target is None else int(target))
    return out


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
        # a field read from a variable of another name reports that name (K_SINK)
        var = {"ollama_host": "OLLAMA_HOST", "K_SINK": "K_SINK"}.get(name, f"DOCLANE_{name.upper()}")
        msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        raise ConfigError(f"{var}={err.get('input')!r} is not valid: {msg}") from None
