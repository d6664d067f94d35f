"""The demo: an invented world's corpus, generated offline, that the tiny recipe trains on (not part of the library)."""
