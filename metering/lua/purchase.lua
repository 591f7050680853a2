-- A purchase credits the account once per idempotency key. The stored answer is returned for a
-- repeat with the same body; a repeat with another body is a conflict and changes nothing.
-- The purchase becomes a credit lot: credits are used oldest lot first, which decides how much
-- of it a refund or an expiry can still take back.
-- KEYS[1] account  KEYS[2] idempotency hash  KEYS[3] purchases hash  KEYS[4] ledger stream
-- KEYS[5] lots by time (zset)  KEYS[6] lot remainders (hash)  KEYS[7] checkouts (id -> json)
-- KEYS[8] open checkouts
-- ARGV[1] idempotency key  ARGV[2] body fingerprint  ARGV[3] purchase id  ARGV[4] amount nanos
-- ARGV[5] purchase json  ARGV[6] max nanos a counter may hold  ARGV[7] now ms
-- ARGV[8] the checkout this payment completes ('' for none)
-- Returns {status, purchase json}; status: created | duplicate | conflict | no_account | too_large
local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then
  local sep = string.find(prev, '\n', 1, true)
  if string.sub(prev, 1, sep - 1) ~= ARGV[2] then return {'conflict', ''} end
  return {'duplicate', string.sub(prev, sep + 1)}
end
local acct = redis.call('HMGET', KEYS[1], 'balance', 'purchased')
if not acct[1] then return {'no_account', ''} end
local amount = tonumber(ARGV[4])
local limit = tonumber(ARGV[6])
if tonumber(acct[1]) + amount > limit or tonumber(acct[2] or '0') + amount > limit then
  return {'too_large', ''}
end
redis.call('HINCRBY', KEYS[1], 'balance', amount)
redis.call('HINCRBY', KEYS[1], 'purchased', amount)
redis.call('HINCRBY', KEYS[1], 'lease_epoch', 1)  -- leases take their windows' new tier
-- The purchase that answers the outstanding auto top-up request carries its event id.
if redis.call('HGET', KEYS[1], 'topup_pending') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'topup_pending', 'topup_pending_ms')
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\n' .. ARGV[5])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
-- Lots are ordered by time in thousandths of a millisecond, strictly increasing, so that two
-- purchases in the same millisecond still have an order.
local last = redis.call('ZREVRANGE', KEYS[5], 0, 0, 'WITHSCORES')
local score = tonumber(ARGV[7]) * 1000
if last[2] and tonumber(last[2]) >= score then score = tonumber(last[2]) + 1 end
redis.call('ZADD', KEYS[5], score, ARGV[3])
redis.call('HSET', KEYS[6], ARGV[3], amount)
-- The checkout it pays is completed. Money received is never turned away: a payment that comes
-- after its checkout expired or failed still credits, and the ledger says so.
local note = ''
local checkout_raw = ARGV[8] ~= '' and redis.call('HGET', KEYS[7], ARGV[8])
if checkout_raw then
  local checkout = cjson.decode(checkout_raw)
  if checkout['status'] == 'completed' then
    note = 'a second payment for checkout ' .. ARGV[8]
  else
    local expired = tonumber(ARGV[7]) >= tonumber(checkout['expires_ms'])
    if checkout['status'] == 'failed' then
      note = 'paid after its checkout failed'
    elseif expired then
      note = 'paid after its checkout expired'
    end
    checkout['status'] = 'completed'
    checkout['purchase_id'] = ARGV[3]
    checkout['late'] = note ~= '' and '1' or '0'
    checkout['closed_ms'] = ARGV[7]
    redis.call('HSET', KEYS[7], ARGV[8], cjson.encode(checkout))
    redis.call('ZREM', KEYS[8], ARGV[8])
  end
end
if note ~= '' then
  redis.call('XADD', KEYS[4], '*', 'kind', 'purchase', 'amount', amount, 'ref', ARGV[3],
             'ms', ARGV[7], 'note', note)
else
  redis.call('XADD', KEYS[4], '*', 'kind', 'purchase', 'amount', amount, 'ref', ARGV[3],
             'ms', ARGV[7])
end
return {'created', ARGV[5]}
