-- Prelude: release reservations whose gateway never settled them (it died, or lost Redis for too
-- long): every script that reads what an account may spend runs this first.
local function release_stale(account_key, reservations_key, expiry_key, now)
  local stale = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now, 'LIMIT', 0, 100)
  for _, gid in ipairs(stale) do
    local held = redis.call('HGET', reservations_key, gid)
    if held then
      redis.call('HINCRBY', account_key, 'reserved', -tonumber(held))
      redis.call('HDEL', reservations_key, gid)
    end
    redis.call('ZREM', expiry_key, gid)
  end
end

