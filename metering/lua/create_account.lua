-- A new account with its optional free allowance, written whole or not at all. The allowance is
-- the account's first credit lot (never refunded, never expired).
-- KEYS[1] account  KEYS[2] ledger stream  KEYS[3] lots by time  KEYS[4] lot remainders
-- ARGV[1] name  ARGV[2] grant nanos  ARGV[3] created_at (RFC 3339)  ARGV[4] now ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local grant = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'balance', grant, 'reserved', 0, 'purchased', 0,
           'granted', grant, 'refunded', 0, 'expired', 0, 'usage', 0, 'created_at', ARGV[3])
if grant > 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) * 1000, 'grant')  -- see purchase.lua
  redis.call('HSET', KEYS[4], 'grant', grant)
  redis.call('XADD', KEYS[2], '*', 'kind', 'grant', 'amount', grant, 'ref', 'grant',
             'ms', ARGV[4])
end
return 1
