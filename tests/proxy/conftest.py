"""Fixtures more than one proxy test module uses: the throwaway TLS certificates."""

from tests.proxy.test_provider_tls import certificates, trusting

__all__ = ["certificates", "trusting"]
