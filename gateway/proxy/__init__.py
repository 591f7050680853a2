"""The request path: a completion request through inbound checks, admission, forwarding, relay
and settlement (gateway/proxy/pipeline.py is its table of contents), and its API adapters.
"""
