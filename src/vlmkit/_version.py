"""The version of vlmkit, in one place (the package and saved model directories report it)."""

__version__ = "0.1.0"
