"""Tests of one package each: ``unit/<name>`` holds ``pipeline/<name>``'s."""
