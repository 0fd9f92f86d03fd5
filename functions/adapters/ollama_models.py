"""Classifier, Extractor and Embedder on Ollama (the `ollama` client).

  OllamaClassifier  /api/chat with `format` = a JSON schema {category (enum of
                    the category names), confidence (0..1), reason}; the prompt
                    lists each category's description and keywords, and the
                    corrections users made (`learn`). Unsure or below the
                    categories' threshold -> "other".
  OllamaExtractor   /api/chat with `format` = the category's JSON schema
                    (`Category.json_schema()`). Values are normalised (ISO
                    dates, "1234.50" amounts, ISO 4217 codes, IBANs without
                    spaces) and validated against the schema; an invalid value
                    is dropped, never stored. Confidence is NOT asked of the
                    model (its self-reports are uncalibrated): a text value
                    found verbatim in the document gets 0.9, one that is not
                    0.6 (a likely hallucination); normalised types (date,
                    amount, currency, integer, list) get a fixed 0.7.
  OllamaEmbedder    /api/embed; the dimension is read from the first answer and
                    must equal `expected_dimension` (the index's) and stay the
                    same afterwards, else ConfigError.

Every call has a timeout and bounded retries with exponential back-off on
connection errors, time-outs, 429 and 5xx. When those are spent,
DOCLANE_OLLAMA_FALLBACK decides: `embedded` answers this one call with the
embedded classifier / extractor / embedder (logged; the embedder only when
its dimension matches, since mixed vectors would spoil the index), `fail`
raises Retryable so the bus retries and finally fails the document.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from doclane.functions import categories as categories_mod
from doclane.functions.errors import ConfigError, Permanent, Retryable
from doclane.functions.ports import Classification, Field_, ParsedDocument

log = logging.getLogger(__name__)

FALLBACKS = ("embedded", "fail")
VERBATIM, NOT_VERBATIM, NORMALISED = 0.9, 0.6, 0.7
# What models write instead of leaving a field out.
NULLISH = frozenset({"null", "none", "n/a", "na", "unknown", "not stated", "not found", "not available", "-"})


class Unreachable(Retryable):
    """Ollama did not answer usefully within the retries."""


class OllamaConnection:
    """One client, the model names, and the retry and fallback policy."""

    def __init__(self, host: str, *, model: str = "llama3.2", embed_model: str = "nomic-embed-text",
                 timeout: float = 120.0, retries: int = 2, backoff: float = 0.5, fallback: str = "fail",
                 client: Any = None):
        if fallback not in FALLBACKS:
            raise ConfigError(f"DOCLANE_OLLAMA_FALLBACK={fallback!r}: use one of {', '.join(FALLBACKS)}")
        self.host, self.model, self.embed_model = host, model, embed_model
        self.retries, self.backoff, self.fallback = retries, backoff, fallback
        if client is None:
            import httpx
            import ollama

            client = ollama.Client(host=host, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))
        self.client = client

    @classmethod
    def from_settings(cls, settings) -> "OllamaConnection":
        return cls(settings.ollama_host, model=settings.ollama_model, embed_model=settings.ollama_embed_model,
                   timeout=settings.ollama_timeout, retries=settings.ollama_retries, fallback=settings.ollama_fallback)

    def request(self, what: str, model: str, call: Callable[[Any], Any]) -> Any:
        """call(client), retried on transient failures; errors translated."""
        import httpx
        from ollama import ResponseError

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return call(self.client)
            except (ConnectionError, httpx.TransportError) as exc:  # refused, reset, timed out
                last = exc
            except ResponseError as exc:
                if exc.status_code == 429 or exc.status_code >= 500:
                    last = exc
                elif exc.status_code == 404:
                    raise ConfigError(f"Ollama at {self.host} has no model {model!r} ({exc.error}): "
                                      f"run `ollama pull {model}` or change the model setting") from exc
                else:
                    raise Permanent(f"Ollama rejected {what}: {exc}") from exc
        raise Unreachable(f"Ollama at {self.host} failed {self.retries + 1} times while {what}: "
                          f"{type(last).__name__}: {last}") from last

    def fall_back(self, exc: Unreachable, fallback: Callable[[], Any] | None, what: str) -> Any:
        """The embedded adapter for this call, or the error, per the policy."""
        if self.fallback != "embedded" or fallback is None:
            raise exc
        log.warning("%s; the embedded %s answers this call (DOCLANE_OLLAMA_FALLBACK=embedded)", exc, what)
        return fallback()

    def check(self) -> list[str]:
        """Problems, one line each (empty when the models are there): for `doclane doctor`."""
        from ollama import ResponseError

        try:
            available = [m.model for m in self.client.list().models if m.model]
        except Exception as exc:  # doctor reports, never raises
            return [f"Ollama at {self.host} is unreachable ({exc}): start it (`ollama serve`) or fix OLLAMA_HOST"]
        problems = []
        for model, needs in ((self.model, "completion"), (self.embed_model, "embedding")):
            try:
                caps = self.client.show(model).capabilities or []
            except ResponseError:
                problems.append(f"Ollama has no model {model!r} (it has: {', '.join(available) or 'none'}): "
                                f"run `ollama pull {model}`")
                continue
            if caps and needs not in caps:
                problems.append(f"Ollama model {model!r} cannot do {needs} (it can: {', '.join(caps)})")
        return problems


class _Fallback:
    """Builds the embedded adapter once, on the first call that needs it."""

    def __init__(self, factory: Callable[[], Any] | None):
        self.factory, self.instance = factory, None

    def __call__(self) -> Any:
        if self.instance is None:
            self.instance = self.factory()
        return self.instance

    def __bool__(self) -> bool:
        return self.factory is not None


# --------------------------------------------------------------------------- classifier
class OllamaClassifier:
    """The `Classifier` port on an Ollama chat model."""

    def __init__(self, conn: OllamaConnection, categories: categories_mod.Categories | None = None,
                 examples_store: str | Path | None = None, *, fallback: Callable[[], Any] | None = None,
                 max_chars: int = 4000, examples_per_category: int = 2):
        self.conn, self.categories = conn, categories or categories_mod.load()
        self.store = Path(examples_store) if examples_store else None
        self.fallback, self.max_chars, self.examples_per_category = _Fallback(fallback), max_chars, examples_per_category
        self.name = f"ollama:{conn.model}"
        self.learned: list[tuple[str, str]] = self._read_store()

    def schema(self) -> dict:
        return {"type": "object", "properties": {
            "category": {"type": "string", "enum": self.categories.names},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string"},
        }, "required": ["category", "confidence", "reason"]}

    def messages(self, doc: ParsedDocument, filename: str) -> list[dict]:
        lines = ["Classify the document into exactly one of these categories.", "", "Categories:"]
        for c in self.categories.items:
            lines.append(f"- {c.name}: {c.description}" + (f" (typical words: {', '.join(c.keywords[:12])})"
                                                           if c.keywords else ""))
        shown = {}
        for category, text in reversed(self.learned):  # the newest corrections first
            if shown.get(category, 0) < self.examples_per_category:
                shown[category] = shown.get(category, 0) + 1
                lines.append(f'Example of {category}: "{text[:300]}"')
        lines += ["", f"Answer {categories_mod.OTHER!r} when no category fits or you are unsure. confidence is "
                      "your probability (0 to 1) that the category is right; reason is one short sentence."]
        text = _text(doc)[: self.max_chars]
        return [{"role": "system", "content": "\n".join(lines)},
                {"role": "user", "content": f"File name: {filename}\n\n{text}"}]

    def classify(self, doc: ParsedDocument, filename: str) -> Classification:
        if not _text(doc).strip():
            return Classification(categories_mod.OTHER, 1.0, self.name, {categories_mod.OTHER: 1.0}, "no text")
        try:
            response = self.conn.request(f"classifying {filename}", self.conn.model, lambda c: c.chat(
                model=self.conn.model, messages=self.messages(doc, filename), format=self.schema(),
                options={"temperature": 0}))
        except Unreachable as exc:
            return self.conn.fall_back(exc, self.fallback or None, "classifier").classify(doc, filename)
        return self.parse(response.message.content or "")

    def parse(self, content: str) -> Classification:
        other = categories_mod.OTHER
        try:
            answer = json.loads(content)
            category, confidence = str(answer["category"]), min(1.0, max(0.0, float(answer["confidence"])))
            reason = str(answer.get("reason") or "")[:500]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s gave no usable answer (%s): %.200s", self.name, exc, content)
            return Classification(other, 0.0, self.name, {}, f"the model's answer was not usable: {exc}")
        if category not in self.categories.names:
            return Classification(other, 0.0, self.name, {}, f"the model answered an unknown category {category!r}")
        if category != other and confidence < self.categories.threshold:
            return Classification(other, round(1 - confidence, 4), self.name, {category: confidence},
                                  f"best guess {category} ({confidence:.2f}) is below the threshold "
                                  f"{self.categories.threshold:.2f}: {reason}")
        return Classification(category, round(confidence, 4), self.name, {category: round(confidence, 4)}, reason)

    def learn(self, text: str, category: str) -> None:
        if category not in self.categories.names:
            raise Permanent(f"cannot learn unknown category {category!r}; known: {', '.join(self.categories.names)}")
        head = text[:2000]
        if not head.strip():
            return
        if self.store is not None:  # the embedded classifier's format: it learns from the same file
            self.store.parent.mkdir(parents=True, exist_ok=True)
            with self.store.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"category": category, "text": head}, ensure_ascii=False) + "\n")
        self.learned.append((category, head))

    def _read_store(self) -> list[tuple[str, str]]:
        if self.store is None or not self.store.is_file():
            return []
        out = []
        for line in self.store.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
                if obj["category"] in self.categories.names:
                    out.append((obj["category"], str(obj["text"])))
            except (ValueError, KeyError, TypeError):
                continue  # a bad line is the embedded classifier's to report
        return out


# --------------------------------------------------------------------------- extractor
class OllamaExtractor:
    """The `Extractor` port on an Ollama chat model (confidences: see module doc)."""

    def __init__(self, conn: OllamaConnection, categories: categories_mod.Categories | None = None, *,
                 fallback: Callable[[], Any] | None = None, max_chars: int = 8000):
        self.conn, self.categories = conn, categories or categories_mod.load()
        self.fallback, self.max_chars = _Fallback(fallback), max_chars
        self.name = f"ollama:{conn.model}"

    def messages(self, doc: ParsedDocument, cat: categories_mod.Category) -> list[dict]:
        fields = "\n".join(f"- {f.name} ({f.type}): {f.description}" for f in cat.fields)
        system = (f"Extract these fields from the {cat.name} ({cat.description}):\n{fields}\n\n"
                  "Dates as YYYY-MM-DD, amounts as plain numbers with a dot for decimals, currencies as ISO 4217 "
                  "codes. Leave a field out when the document does not state it; never guess.")
        return [{"role": "system", "content": system}, {"role": "user", "content": _text(doc)[: self.max_chars]}]

    def extract(self, doc: ParsedDocument, category: str) -> dict[str, Field_]:
        try:
            cat = self.categories.get(category)
        except KeyError:
            cat = self.categories.get(categories_mod.OTHER)
        if not cat.fields or not _text(doc).strip():
            return {}
        try:
            response = self.conn.request(f"extracting {cat.name} fields", self.conn.model, lambda c: c.chat(
                model=self.conn.model, messages=self.messages(doc, cat), format=cat.json_schema(),
                options={"temperature": 0}))
        except Unreachable as exc:
            return self.conn.fall_back(exc, self.fallback or None, "extractor").extract(doc, category)
        try:
            values = json.loads(response.message.content or "")
            if not isinstance(values, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.warning("%s gave no usable %s fields (%s)", self.name, cat.name, exc)
            return {}
        return self.fields(cat, values, _text(doc))

    def fields(self, cat: categories_mod.Category, values: dict, text: str) -> dict[str, Field_]:
        """The model's values, normalised and validated field by field."""
        import jsonschema

        schema = cat.json_schema()
        haystack = _squash(text)
        out: dict[str, Field_] = {}
        for spec in cat.fields:
            raw = values.get(spec.name)
            if raw in (None, "", []) or (isinstance(raw, str) and raw.strip().lower() in NULLISH):
                continue
            value = normalise(spec.type, raw)
            try:
                jsonschema.validate(value, schema["properties"][spec.name], format_checker=jsonschema.FormatChecker())
            except jsonschema.ValidationError as exc:
                log.info("%s: dropped %s.%s=%r (%s)", self.name, cat.name, spec.name, raw, exc.message)
                continue
            if spec.type in ("date", "amount", "currency", "integer", "string_list"):
                confidence = NORMALISED
            else:
                confidence = VERBATIM if _squash(str(raw)) in haystack else NOT_VERBATIM
            out[spec.name] = Field_(value=value, confidence=confidence, raw=str(raw))
        return out


def normalise(ftype: str, value: Any) -> Any:
    """A model's value in the canonical form of its field type (unchanged when unparseable)."""
    if ftype == "string_list":
        return [str(v).strip() for v in (value if isinstance(value, list) else [value]) if str(v).strip()]
    if isinstance(value, (dict, list)):
        return value  # the schema check rejects it
    text = str(value).strip()
    if ftype == "date":
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return text
        import dateparser

        from doclane.functions.adapters.heuristic_extractor import DATE_LANGS

        # Day first, as most of the world writes it (the prompt asks for ISO anyway).
        parsed = dateparser.parse(text, languages=DATE_LANGS, settings={"DATE_ORDER": "DMY", "PREFER_DAY_OF_MONTH": "first",
                                                  "REQUIRE_PARTS": ["day", "month", "year"]})
        return parsed.date().isoformat() if parsed else text
    if ftype == "amount":
        from price_parser import Price

        amount = Price.fromstring(text).amount if not isinstance(value, (int, float)) else value
        return f"{float(amount):.2f}" if amount is not None else text
    if ftype == "currency":
        from doclane.functions.adapters.heuristic_extractor import currency_code

        return currency_code(text) or text.upper()
    if ftype == "iban":
        return re.sub(r"\s+", "", text).upper()
    if ftype == "integer":
        return int(value) if isinstance(value, (int, float)) or text.lstrip("-").isdigit() else text
    return text


# --------------------------------------------------------------------------- embedder
class OllamaEmbedder:
    """The `Embedder` port on Ollama's /api/embed."""

    def __init__(self, conn: OllamaConnection, *, expected_dimension: int | None = None,
                 fallback: Callable[[], Any] | None = None, batch_size: int = 32):
        self.conn, self.expected_dimension, self.batch_size = conn, expected_dimension, batch_size
        self.fallback = _Fallback(fallback)
        self.name = f"ollama:{conn.embed_model}"
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self.embed(["dimension probe"])  # the model says: nothing to configure
        return int(self._dimension or self.expected_dimension or 0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows: list[list[float]] = []
        try:
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start: start + self.batch_size])
                response = self.conn.request("embedding", self.conn.embed_model,
                                             lambda c: c.embed(model=self.conn.embed_model, input=batch))
                rows.extend(response.embeddings)
        except Unreachable as exc:
            return self._fall_back(exc, texts)
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(texts):
            raise Retryable(f"Ollama answered {len(rows)} embeddings for {len(texts)} texts")
        self._check_dimension(matrix.shape[1])
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1, norms)

    def _check_dimension(self, width: int) -> None:
        want = self._dimension or self.expected_dimension
        if want is not None and width != want:
            raise ConfigError(f"Ollama model {self.conn.embed_model!r} gives {width}-dimensional embeddings but the "
                              f"index holds {want}-dimensional vectors: set DOCLANE_OLLAMA_EMBED_MODEL back, or "
                              "re-index into a new index")
        self._dimension = width

    def _fall_back(self, exc: Unreachable, texts: Sequence[str]) -> np.ndarray:
        want = self._dimension or self.expected_dimension
        if self.conn.fallback == "embedded" and self.fallback:
            if want is None or self.fallback().dimension != want:
                raise Unreachable(f"{exc}; the embedded embedder cannot stand in: its vectors "
                                  f"({self.fallback().dimension} dimensions) would not match the index's ({want})") from exc
        return self.conn.fall_back(exc, self.fallback or None, "embedder").embed(texts)


def _text(doc: ParsedDocument) -> str:
    return doc.text or doc.markdown or ""


def _squash(text: str) -> str:
    """Lower case, whitespace removed: '4 904,94 €' is found in '4904,94€'."""
    return re.sub(r"\s+", "", text).lower()


__all__ = ["OllamaConnection", "OllamaClassifier", "OllamaExtractor", "OllamaEmbedder", "Unreachable", "normalise"]
