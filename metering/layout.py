"""Redis key layout of the metering package (nobody else reads these names).

Everything an admission or a settlement touches for one account shares the hash tag `{a:<id>}`, so
each script touches one slot and runs unchanged on Redis, Valkey and Redis Cluster. Only the
key-hash index and the account list live outside an account's slot, and no script touches them.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AccountKeys:
    account_id: str
    tag: str = field(init=False, repr=False, compare=False)  # a dozen keys a request use it

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", f"gw:{{a:{self.account_id}}}")

    @property
    def account(self) -> str:
        return f"{self.tag}:acct"

    def api_key(self, key_hash: str) -> str:
        return f"{self.tag}:key:{key_hash}"

    @property
    def api_keys(self) -> str:
        return f"{self.tag}:keys"

    @property
    def reservations(self) -> str:
        return f"{self.tag}:res"

    @property
    def reservation_expiry(self) -> str:
        return f"{self.tag}:resx"

    @property
    def leases(self) -> str:
        """The ids of the gateway processes' leases among the reservations (metering.leasing)."""
        return f"{self.tag}:leases"

    @property
    def lease_terms(self) -> str:
        """Each process's last lease renewal applied (id prefix -> term), so none runs twice."""
        return f"{self.tag}:leaseterm"

    def generation(self, generation_id: str) -> str:
        return f"{self.tag}:gen:{generation_id}"

    @property
    def usage_stream(self) -> str:
        return f"{self.tag}:usage"

    @property
    def idempotency(self) -> str:
        return f"{self.tag}:idem"

    @property
    def purchases(self) -> str:
        return f"{self.tag}:purchases"

    @property
    def checkouts(self) -> str:
        """Purchases asked of the payment side (metering.payments.checkouts): id -> JSON."""
        return f"{self.tag}:chk"

    @property
    def checkout_urls(self) -> str:
        """Where the payment side collects each checkout: id -> URL."""
        return f"{self.tag}:chkurl"

    def checkout_asking(self, checkout_id: str) -> str:
        """Held (briefly) by the one call asking the payment side for a checkout's URL."""
        return f"{self.tag}:chkask:{checkout_id}"

    def checkout_ask_failed(self, checkout_id: str) -> str:
        """When (ms) the last call that asked for a checkout's URL got none."""
        return f"{self.tag}:chkfail:{checkout_id}"

    @property
    def open_checkouts(self) -> str:
        """The checkouts not paid, failed or expired yet: id -> expiry (ms)."""
        return f"{self.tag}:chkopen"

    @property
    def checkout_idempotency(self) -> str:
        """Idempotency-Key -> fingerprint and checkout id."""
        return f"{self.tag}:chkidem"

    @property
    def ledger(self) -> str:
        return f"{self.tag}:ledger"

    @property
    def lots(self) -> str:
        """Credit lots (grant, purchases) by time: used oldest first."""
        return f"{self.tag}:lots"

    @property
    def lot_remainders(self) -> str:
        """What refunds and expiry have left of each lot (used or not)."""
        return f"{self.tag}:lotrem"

    @property
    def refunds(self) -> str:
        return f"{self.tag}:refunds"

    @property
    def outbox(self) -> str:
        """Outgoing events (auto top-up requests) waiting for delivery, oldest first."""
        return f"{self.tag}:outbox"

    def rollup(self, granularity: str, start: int) -> str:
        """Activity totals of one time bucket (see metering.rollups)."""
        return f"{self.tag}:roll:{granularity}:{start}"

    @property
    def rollup_cursor(self) -> str:
        """The usage stream's last entry the rollups have counted (see metering.rollup_fold)."""
        return f"{self.tag}:rollcur"

    @property
    def rollup_lease(self) -> str:
        """Which process's background fold counts the account's records now."""
        return f"{self.tag}:rolllease"

    @property
    def usage_by_day(self) -> str:
        """Usage per UTC day: the ledger's usage entries, summarised per period."""
        return f"{self.tag}:usageday"


ACCOUNT_INDEX = "gw:accounts"
OUTBOX_INDEX = "gw:outbox-accounts"  # accounts whose outbox may hold events


def key_index(key_hash: str) -> str:
    return f"gw:keyidx:{key_hash}"
