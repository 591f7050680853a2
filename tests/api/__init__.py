"""Tests of the HTTP surfaces that are not the proxy."""
