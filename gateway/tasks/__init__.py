"""The tasks room of the gateway (see docs/architecture.md)."""
