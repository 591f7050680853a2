"""The HTTP surfaces that are not the proxy: the consumer API (credits, key, generations,
models), management keys, Activity (API, CSV, page), the admin API, payment webhooks, and the
OpenAPI document of them all.
"""
