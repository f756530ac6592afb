"""Tests of ``pipeline/send``."""
