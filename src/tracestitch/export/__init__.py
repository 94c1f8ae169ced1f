"""Shipping finished runs out of the process.

This package's ``__init__`` stays import-light: ``import tracestitch`` pulls in
:mod:`tracestitch.export.memory` (the ``RunCollector``), and must not start threads or import
HTTP or protobuf libraries.
"""

# The package itself exports nothing: import its modules (config, worker, sinks ...).
__all__: list[str] = []
