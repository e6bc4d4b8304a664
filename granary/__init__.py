"""Granary: a self-hosted, geo-distributed, S3-compatible object store."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("granary")  # pyproject.toml's, as installed
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
