"""doclane: an event-driven document pipeline."""
__version__ = "0.1.0"
