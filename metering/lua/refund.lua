-- Refund the unused part of a purchase made less than the refund window ago. The fee is never
-- refunded, crypto never. Idempotent: a purchase is refunded once, and asking again returns that
-- refund. An operator's refund waits while part of it is held by requests in flight (a refund is
-- never partial); a refund the payment side has already made (ARGV[6] = "1") takes back all that
-- is unused, even if a request in flight then ends with the balance below zero.
-- KEYS[1] account  KEYS[2] purchases  KEYS[3] lots  KEYS[4] lot remainders  KEYS[5] refunds
-- KEYS[6] ledger  KEYS[7] reservations  KEYS[8] reservation expiry
-- ARGV[1] purchase id  ARGV[2] now ms  ARGV[3] refund window ms  ARGV[4] created_at text
-- ARGV[5] "1" when a crypto purchase may be refunded  ARGV[6] "1" when the payment side has
-- already returned the money  ARGV[7] how long (ms) a refund that waits for held credit keeps
-- new leases from taking any (it recalls the account's leases: see lease.lua)
-- KEYS[9] outbox  ARGV[8] an event id: the refund is also queued there as `refund.requested`,
-- for the payment side to return the money ('' when the payment side needs no telling)
-- Returns {status, refund json}; status: refunded | duplicate | not_found | crypto | too_old |
-- nothing_left | in_flight
local done = redis.call('HGET', KEYS[5], ARGV[1])
if done then return {'duplicate', done} end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'not_found', ''} end
local purchase = cjson.decode(raw)
if purchase['method'] == 'crypto' and ARGV[5] ~= '1' then return {'crypto', ''} end
local now = tonumber(ARGV[2])
local created = tonumber(purchase['created_at_ms'] or 0)
if now - created >= tonumber(ARGV[3]) then return {'too_old', ''} end
release_stale(KEYS[1], KEYS[7], KEYS[8], now)
local acct = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
local balance, reserved = tonumber(acct[1]), tonumber(acct[2] or '0')
local amount = unused_by_lot(balance, KEYS[3], KEYS[4])[ARGV[1]] or 0
if amount <= 0 then return {'nothing_left', ''} end
if ARGV[6] ~= '1' and amount > balance - reserved then
  -- What busy processes lease is held as well: they give it back once they see the epoch move.
  redis.call('HINCRBY', KEYS[1], 'lease_epoch', 1)
  redis.call('HSET', KEYS[1], 'lease_pause_until', now + tonumber(ARGV[7]))
  return {'in_flight', ''}
end
redis.call('HDEL', KEYS[1], 'lease_pause_until')
redis.call('HINCRBY', KEYS[1], 'lease_epoch', 1)  -- leases re-size to the balance as it now is
redis.call('HINCRBY', KEYS[1], 'balance', -amount)
redis.call('HINCRBY', KEYS[1], 'purchased', -amount)
redis.call('HINCRBY', KEYS[1], 'refunded', amount)
redis.call('HINCRBY', KEYS[4], ARGV[1], -amount)
-- Amounts as decimal strings: cjson writes numbers with 14 significant digits, and nanodollars
-- need up to 16.
local refund = cjson.encode({purchase_id = ARGV[1], refunded = string.format('%d', amount),
                             fee = string.format('%d', purchase['fee']), created_at = ARGV[4]})
redis.call('HSET', KEYS[5], ARGV[1], refund)
if ARGV[8] ~= '' then
  redis.call('RPUSH', KEYS[9], cjson.encode({
    type = 'refund.requested', id = ARGV[8], created_ms = ARGV[2], purchase_id = ARGV[1],
    payment_id = purchase['idempotency_key'], method = purchase['method'],
    purchase_amount = string.format('%d', purchase['amount']),
    refunded = string.format('%d', amount), fee_kept = string.format('%d', purchase['fee'])}))
end
redis.call('XADD', KEYS[6], '*', 'kind', 'refund', 'amount', -amount, 'ref', ARGV[1],
           'ms', ARGV[2])
return {'refunded', refund}
