"""Tests of :mod:`vlmkit.eval`."""
