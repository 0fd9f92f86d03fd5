"""Events: the pydantic models that are doclane's schema registry, and the
CloudEvents envelopes and codecs built on them."""

from doclane.events.envelope import (  # noqa: F401
    InvalidEvent,
    derive,
    new_event,
    validate,
    event_data,
)
from doclane.events.registry import REGISTRY, EventSpec  # noqa: F401
