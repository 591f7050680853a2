"""The relay room of the gateway (see docs/architecture.md)."""
