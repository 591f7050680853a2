"""The observability room of the gateway (see docs/architecture.md)."""
