"""What operators watch: Prometheus metrics, the access and other log lines, /healthz and
/readyz.
"""
