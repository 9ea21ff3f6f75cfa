"""Domain errors. The CLI turns any HwnasError into a one-line message and exit code 2.

Messages name the bad value and what would be accepted, so users can fix the input
without reading a traceback.
"""
from __future__ import annotations


class HwnasError(Exception):
    """Base class for every user-facing error raised by hwnas."""


class ModelError(HwnasError):
    """A model path or file is missing, unreadable or not a supported architecture."""


class InvalidSubnetError(HwnasError):
    """A subnet configuration does not belong to the search space."""


class SpaceError(HwnasError):
    """A search-space definition is malformed."""


class DataError(HwnasError):
    """A data file (task, calibration, training) is missing or malformed."""


class TargetError(HwnasError):
    """A target profile is unknown or malformed."""


class MeasurementError(HwnasError):
    """A latency/throughput measurement could not be made or is unusable."""


class SearchError(HwnasError):
    """A search run cannot start or resume."""


class ExportError(HwnasError):
    """Quantization, IR export or bundle creation failed."""


class BundleError(HwnasError):
    """A bundle failed verification (checksums, manifest, layout)."""


class OutputError(HwnasError):
    """An output path cannot be written."""


class ClusterError(HwnasError):
    """A Ray cluster cannot be reached or cannot run the job (no target node, mixed hosts)."""
