"""The decorator analysis modules register with. The registry itself is core (core/registry.py):
the compiler and the schema read it without importing any analysis."""
from ..core.registry import REGISTRY, analysis, get, load_all  # noqa: F401
