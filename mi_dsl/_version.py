"""The package's and the spec language's versions (a leaf module every stage may read)."""
__version__ = "0.1.0"
LANGUAGE_VERSION = 1
