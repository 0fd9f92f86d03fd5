"""doclane's functions: each stage a pure handler (event in, events out), the
ports (Protocols) they need, and one adapter module per outside system."""
