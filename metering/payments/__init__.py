"""What passes between an account and the payment side: checkouts (purchases asked for, not paid
yet), the outbox of outgoing requests (auto top-up, refunds), and the purchases as their holder
sees them."""
