"""Tests of limits, windows and their decisions."""
