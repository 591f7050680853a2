-- Open a checkout: a purchase the payment side is asked to collect, pending until its payment
-- arrives. Once per idempotency key: the same key with the same body returns the first checkout,
-- with another body a conflict. At most ARGV[6] checkouts may be open (not paid, failed or
-- expired) at once. Every value is stored as a string: cjson would round big numbers.
-- KEYS[1] account  KEYS[2] checkout idempotency hash  KEYS[3] checkouts (id -> json)
-- KEYS[4] open checkouts (id -> expiry ms)
-- ARGV[1] idempotency key  ARGV[2] body fingerprint  ARGV[3] checkout id  ARGV[4] checkout json
-- ARGV[5] now ms  ARGV[6] most open at once  ARGV[7] expires at ms
-- Returns {status, checkout json}; status: created | duplicate | conflict | no_account | too_many
local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then
  local sep = string.find(prev, '\n', 1, true)
  if string.sub(prev, 1, sep - 1) ~= ARGV[2] then return {'conflict', ''} end
  return {'duplicate', redis.call('HGET', KEYS[3], string.sub(prev, sep + 1)) or ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_account', ''} end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[5])  -- expired: open no longer
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then return {'too_many', ''} end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\n' .. ARGV[3])
return {'created', ARGV[4]}
