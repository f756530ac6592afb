"""Tests of ``pipeline/state``."""
