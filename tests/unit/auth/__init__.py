"""Tests of ``pipeline/auth``."""
