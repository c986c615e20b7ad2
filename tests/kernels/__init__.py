"""Tests of vlmkit.kernels."""
