"""Tests of vlmkit.miners."""
