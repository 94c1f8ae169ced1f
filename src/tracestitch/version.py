"""The package's version, in a module of its own: the exporters and the collector name it
without importing the package's facade (which imports them)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
