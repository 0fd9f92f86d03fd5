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
    opensearch_url: str | None = None
    ollama_host: str | None = Field(None, validation_alias=AliasChoices("OLLAMA_HOST", "DOCLANE_OLLAMA_HOST"))
    redis_url: str | None = None

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

    @field_validator("amqp_url", "database_url", "s3_endpoint_url", "s3_bucket", "opensearch_url",
                     "ollama_host", "redis_url", "categories", "webhook_secret", mode="before")
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
