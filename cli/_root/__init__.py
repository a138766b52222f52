"""hutch: a transactional, content-addressed store for downloaded artifacts."""

__version__ = "0.1.0"
