"""The adapters a function uses, chosen from Settings and built lazily, so a
process only loads what its function touches (the ingest worker never imports
torch; only classify starts a Docling parser)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from doclane.functions import categories as categories_mod
from doclane.functions.settings import Settings


class Context:
    def __init__(self, settings: Settings, **overrides: Any):
        self.settings = settings
        # Tests and the runtime may hand in ready adapters (e.g. a shared embedder).
        for name, value in overrides.items():
            setattr(self, name, value)

    @cached_property
    def categories(self) -> categories_mod.Categories:
        return categories_mod.load(self.settings.categories)

    @cached_property
    def bucket(self):
        if self.settings.s3_endpoint_url or self.settings.s3_bucket:
            from doclane.functions.adapters.s3_store import S3Store

            return S3Store.from_settings(self.settings)
        from doclane.functions.adapters.folder_store import FolderStore

        return FolderStore(self.settings.inbox, bucket="inbox")

    def objects(self, bucket: str):
        """The store holding a notification's bucket: with S3 the notification
        may name another bucket of the same endpoint; the folder has one."""
        for_bucket = getattr(self.bucket, "for_bucket", None)
        return for_bucket(bucket) if for_bucket and bucket else self.bucket

    @cached_property
    def artefacts(self):
        if self.settings.s3:
            # Every function process must see the parsed documents: with S3 they
            # go to the object store too (never a local folder of one machine).
            from doclane.functions.adapters.s3_store import ARTEFACT_PREFIX, S3Store

            if self.settings.s3_artefact_bucket:
                return S3Store.from_settings(self.settings, bucket=self.settings.s3_artefact_bucket)
            return S3Store.from_settings(self.settings, prefix=ARTEFACT_PREFIX)
        from doclane.functions.adapters.folder_store import FolderStore

        return FolderStore(self.settings.artefact_dir, bucket="artefacts")

    @cached_property
    def metadata(self):
        from doclane.functions.adapters.metadata import open_metadata

        return open_metadata(self.settings.database_url or str(self.settings.metadata_path))

    @cached_property
    def index(self):
        if self.settings.opensearch_url:
            from doclane.functions.adapters.opensearch_index import OpenSearchIndex

            return OpenSearchIndex.from_settings(self.settings, dimension=self.embedder.dimension)
        from doclane.functions.adapters.embedded_index import EmbeddedIndex

        return EmbeddedIndex(self.settings.index_path, **EmbeddedIndex.settings_options(self.settings))

    @cached_property
    def embedder(self):
        from doclane.functions.adapters import minilm

        if self.settings.embedder == "ollama":
            from doclane.functions.adapters.ollama_models import OllamaEmbedder

            return OllamaEmbedder(self.ollama, fallback=lambda: minilm.shared(self.settings))
        return minilm.shared(self.settings)

    @cached_property
    def ollama(self):
        from doclane.functions.adapters.ollama_models import OllamaConnection
        from doclane.functions.errors import ConfigError

        if not self.settings.ollama_host:
            raise ConfigError("DOCLANE_EMBEDDER=ollama needs OLLAMA_HOST (e.g. http://127.0.0.1:11434)")
        return OllamaConnection.from_settings(self.settings)

    @cached_property
    def parser(self):
        from doclane.functions.adapters.docling_parser import DoclingParser

        return DoclingParser(timeout=self.settings.parse_timeout)

    @cached_property
    def classifier(self):
        from doclane.functions.adapters.embedded_classifier import EmbeddedClassifier

        examples = self.settings.data_dir / "examples.jsonl"
        if self.settings.ollama_host:
            from doclane.functions.adapters import minilm
            from doclane.functions.adapters.ollama_models import OllamaClassifier

            return OllamaClassifier(self.ollama, self.categories, examples, fallback=lambda: EmbeddedClassifier(
                minilm.shared(self.settings), self.categories, examples_store=examples))
        return EmbeddedClassifier(self.embedder, self.categories, examples_store=examples)

    @cached_property
    def extractor(self):
        from doclane.functions.adapters.heuristic_extractor import HeuristicExtractor

        if self.settings.ollama_host:
            from doclane.functions.adapters.ollama_models import OllamaExtractor

            return OllamaExtractor(self.ollama, self.categories, fallback=lambda: HeuristicExtractor(self.categories))
        return HeuristicExtractor(self.categories)

    @cached_property
    def bus(self):
        kind = self.settings.bus_kind  # DOCLANE_BUS, or what the URLs imply (Settings.bus_kind)
        if kind == "rabbitmq":
            from doclane.functions.adapters.rabbitmq_bus import RabbitBus
            from doclane.functions.runtime import triggers

            # Every process derives the triggers' retry policy from the same settings;
            # the metadata store remembers published event ids (RabbitMQ cannot).
            return RabbitBus(self.settings.amqp_url, self.settings.broker, triggers=triggers(self.settings),
                             dedup=self.metadata)
        if kind == "redis":
            from doclane.functions.adapters.redis_bus import RedisBus
            from doclane.functions.runtime import triggers

            # Redis remembers published event ids itself, in the publishing script.
            return RedisBus.from_settings(self.settings, triggers=triggers(self.settings))
        if kind == "http":
            from doclane.functions.adapters.http_bus import HttpBus

            # Publish only (Knative): the broker's Triggers push events to the functions.
            return HttpBus.from_settings(self.settings)
        from doclane.local.bus import SqliteBus

        return SqliteBus(self.settings.bus_path)

    def close(self) -> None:
        for name in ("parser", "metadata", "index", "bus"):
            adapter = self.__dict__.get(name)
            close = getattr(adapter, "close", None)
            if close:
                try:
                    close()
                except Exception:  # closing is best effort at shutdown
                    pass

