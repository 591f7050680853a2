"""The process side: the command line, `serve` and its workers, the HTTP server, the embedded
Redis launcher and its orphan guard, `demo` and its simulated provider.
"""
