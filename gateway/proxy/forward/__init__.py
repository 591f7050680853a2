"""The forward room of the gateway (see docs/architecture.md)."""
