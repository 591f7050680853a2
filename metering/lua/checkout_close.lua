-- Close a checkout that will not be paid (the payment side said it failed, or was declined).
-- Only an open one: a paid checkout stays paid, and a failed one failed.
-- KEYS[1] checkouts (id -> json)  KEYS[2] open checkouts
-- ARGV[1] checkout id  ARGV[2] why (failed, declined, ...)  ARGV[3] now ms
-- Returns {status, checkout json}; status: closed | not_open | not_found
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'not_found', ''} end
local checkout = cjson.decode(raw)
if checkout['status'] ~= 'pending' then return {'not_open', raw} end
checkout['status'] = 'failed'
checkout['failure'] = ARGV[2]
checkout['closed_ms'] = ARGV[3]
raw = cjson.encode(checkout)
redis.call('HSET', KEYS[1], ARGV[1], raw)
redis.call('ZREM', KEYS[2], ARGV[1])
return {'closed', raw}
