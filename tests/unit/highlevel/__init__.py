"""Tests of ``pipeline/highlevel``."""
