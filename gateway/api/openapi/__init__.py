"""The openapi room of the gateway (see docs/architecture.md)."""
