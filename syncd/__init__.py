"""syncd: keeps a data warehouse in sync with FullStory's event export, exactly once."""

__version__ = "0.1.0"

__all__ = ["__version__"]
