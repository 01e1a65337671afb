"""hybridlib: hybrid (mono / cross / multi) batch training for cross-lingual retrieval."""

__version__ = "0.1.0"
