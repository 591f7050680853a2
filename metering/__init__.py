"""Money: prices and costs, accounts, keys, purchases, admission and settlement, usage records.

Knows Redis (its own key layout and Lua scripts, kept here) and nothing of HTTP.
"""
