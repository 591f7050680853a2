"""Tests of the metering store's contract and its arithmetic."""
