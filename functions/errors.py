"""The one error hierarchy. Adapters translate foreign exceptions into these
at their boundary; bindings decide retry vs dead-letter from the class alone.

Raise `Retryable` and the event is redelivered with back-off (HTTP 5xx on
Knative); raise `Permanent` (or `InvalidEvent`) and it is never retried
(HTTP 400) but dead-lettered with the message as the reason.
"""

from doclane.events.envelope import InvalidEvent  # noqa: F401  (re-exported: a Permanent error)


class DoclaneError(Exception):
    """Base of doclane's own errors."""


class Retryable(DoclaneError):
    """A transient failure: a store or endpoint was unreachable, a lock was held."""


class Permanent(DoclaneError):
    """Retrying will not help: the input is bad or unsupported."""


class ParseError(Permanent):
    """The document could not be parsed (broken, encrypted, unsupported, timed out)."""


class ConfigError(DoclaneError):
    """Bad configuration: the message says what to change."""


class NotFound(DoclaneError):
    """The object or document does not exist."""
