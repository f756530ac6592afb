"""Tests of ``pipeline/inputs``."""
