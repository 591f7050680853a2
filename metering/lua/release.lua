-- Release one reservation now: the gateway gave up waiting for its admission's reply, so the
-- admission may have run, or may still run later (its command can reach Redis after this one).
-- What it holds goes back, and a tombstone (the id held at 0, until ARGV[2]) makes a late
-- admission of the same id a retry that takes nothing; release_stale clears the tombstone.
-- Its places in flight (KEYS from 4: the limit hooks' sorted sets) are given back too; tokens
-- its admission may have taken from a window stay taken (the window ends under its limit).
-- KEYS[1] account  KEYS[2] reservations  KEYS[3] expiry zset
-- ARGV[1] generation id  ARGV[2] tombstone expiry ms. Returns 1 when something was held.
local held = release_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
for k = 4, #KEYS do
  limits_release(KEYS[k], 'c', 0, ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], 0)
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]), ARGV[1])
return held
