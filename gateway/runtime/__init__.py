"""The runtime room of the gateway (see docs/architecture.md)."""
