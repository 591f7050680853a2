"""The http room of the gateway (see docs/architecture.md)."""
