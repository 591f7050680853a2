"""The api room of the gateway (see docs/architecture.md)."""
