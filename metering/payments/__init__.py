"""What passes between an account and the payment side: checkouts (purchases asked for, not paid
yet) and the outbox of outgoing requests (auto top-up, refunds)."""
