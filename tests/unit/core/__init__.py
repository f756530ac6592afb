"""Tests of ``pipeline/core``."""
