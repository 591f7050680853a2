-- Turn auto top-up off: its settings and its outstanding request go, and the top-up requests
-- still queued are not sent. Refund requests in the same outbox stay: their credit is already
-- taken back, so the money must follow (see refund.lua).
-- KEYS[1] account  KEYS[2] outbox. Returns how many top-up requests were dropped.
redis.call('HDEL', KEYS[1], 'topup_threshold', 'topup_amount', 'topup_pending',
           'topup_pending_ms')
local dropped = 0
for _, event in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if not string.find(event, '"type":"refund.requested"', 1, true) then
    dropped = dropped + redis.call('LREM', KEYS[2], 1, event)
  end
end
return dropped
