-- Refund the unused part of a purchase made less than the refund window ago. The fee is never
-- refunded, crypto never; credits held by requests in flight are not refundable while held.
-- Idempotent: a purchase is refunded once, and asking again returns that refund.
-- KEYS[1] account  KEYS[2] purchases  KEYS[3] lots  KEYS[4] lot remainders  KEYS[5] refunds
-- KEYS[6] ledger
-- ARGV[1] purchase id  ARGV[2] now ms  ARGV[3] refund window ms  ARGV[4] created_at text
-- ARGV[5] "1" when a crypto purchase may be refunded (the payment side already returned it)
-- Returns {status, refund json}; status: refunded | duplicate | not_found | crypto | too_old |
-- nothing_left
local done = redis.call('HGET', KEYS[5], ARGV[1])
if done then return {'duplicate', done} end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'not_found', ''} end
local purchase = cjson.decode(raw)
if purchase['method'] == 'crypto' and ARGV[5] ~= '1' then return {'crypto', ''} end
local now = tonumber(ARGV[2])
if now - tonumber(purchase['created_at_ms']) >= tonumber(ARGV[3]) then return {'too_old', ''} end
local acct = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
local balance, reserved = tonumber(acct[1]), tonumber(acct[2] or '0')
local unused = unused_by_lot(balance, KEYS[3], KEYS[4])[ARGV[1]] or 0
local amount = math.min(unused, math.max(balance - reserved, 0))
if amount <= 0 then return {'nothing_left', ''} end
redis.call('HINCRBY', KEYS[1], 'balance', -amount)
redis.call('HINCRBY', KEYS[1], 'purchased', -amount)
redis.call('HINCRBY', KEYS[1], 'refunded', amount)
redis.call('HINCRBY', KEYS[4], ARGV[1], -amount)
-- Amounts as decimal strings: cjson writes numbers with 14 significant digits, and nanodollars
-- need up to 16.
local refund = cjson.encode({purchase_id = ARGV[1], refunded = string.format('%d', amount),
                             fee = string.format('%d', purchase['fee']), created_at = ARGV[4]})
redis.call('HSET', KEYS[5], ARGV[1], refund)
redis.call('XADD', KEYS[6], '*', 'kind', 'refund', 'amount', -amount, 'ref', ARGV[1],
           'ms', ARGV[2])
return {'refunded', refund}
