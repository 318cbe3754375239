"""tspipe: versioned, evaluated temporally-sensitive clip features for untrimmed videos."""

__version__ = "0.1.0"
