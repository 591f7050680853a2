"""The Credits fixtures (a gateway with the simulated payment side) for the API and page tests."""

from tests.api.credits_support import credits_env, payment_side

__all__ = ["credits_env", "payment_side"]
