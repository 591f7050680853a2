"""The account holder's billing: the Credits API and page's purchases, checkouts, refunds and
auto top-up, and the signed requests they send the payment side."""
