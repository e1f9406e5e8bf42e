"""Tools around serving: the loopback load test, and `classify` (LiteRT on a desktop)."""
