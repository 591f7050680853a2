"""The settle room of the gateway (see docs/architecture.md)."""
