"""The APIs the gateway meters, one adapter module each (adapter.py says what one knows)."""
