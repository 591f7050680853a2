"""Tests of metrics, dashboards, logs and secrets."""
