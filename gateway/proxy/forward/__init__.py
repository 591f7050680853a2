"""Forwarding to providers: the order they are tried in, our HTTP/1.1 client and its framing,
their refusals, and the bound on a whole answer.
"""
