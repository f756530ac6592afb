"""Tests of ``pipeline/app``."""
