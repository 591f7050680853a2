"""What runs beside requests: the credit expiry sweep and auto top-up delivery (each under a
Redis lease, so several gateways share the work).
"""
