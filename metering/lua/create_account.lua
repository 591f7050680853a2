-- A new account with its optional free allowance, written whole or not at all.
-- KEYS[1] account  KEYS[2] ledger stream
-- ARGV[1] name  ARGV[2] grant nanos  ARGV[3] created_at (RFC 3339)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local grant = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'balance', grant, 'reserved', 0, 'purchased', 0,
           'granted', grant, 'usage', 0, 'created_at', ARGV[3])
if grant > 0 then
  redis.call('XADD', KEYS[2], '*', 'kind', 'grant', 'amount', grant, 'ref', '')
end
return 1
