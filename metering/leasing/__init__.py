"""Leased admission for busy accounts (see leases.py)."""
