"""Settlement: one request's exchange from admission to its one settlement, the settlements still
out, and the journal that keeps them (and releases) while Redis is away.
"""
