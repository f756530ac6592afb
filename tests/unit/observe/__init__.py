"""Tests of ``pipeline/observe``."""
