"""The proxy room of the gateway (see docs/architecture.md)."""
