"""Tests of settings and catalog files."""
