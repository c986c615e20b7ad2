"""Tests of vlmkit.ops."""
