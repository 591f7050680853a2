-- Prelude: give back what reservations hold. release_one serves a gateway that gave up waiting
-- for an admission's reply (the script may have run); release_stale, reservations whose gateway
-- never settled them (it died, or lost Redis for too long): every script that reads what an
-- account may spend runs it first.
local function release_one(account_key, reservations_key, expiry_key, gid)
  local held = redis.call('HGET', reservations_key, gid)
  if held then
    local amount = tonumber(held)
    if amount ~= 0 then  -- 0: a tombstone (release.lua); Redis refuses an increment of "-0"
      redis.call('HINCRBY', account_key, 'reserved', -amount)
    end
    redis.call('HDEL', reservations_key, gid)
  end
  redis.call('ZREM', expiry_key, gid)
  return (held and tonumber(held) ~= 0) and 1 or 0
end

local function release_stale(account_key, reservations_key, expiry_key, now)
  local stale = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now, 'LIMIT', 0, 100)
  for _, gid in ipairs(stale) do
    release_one(account_key, reservations_key, expiry_key, gid)
  end
end
