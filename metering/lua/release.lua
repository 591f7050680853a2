-- Release one reservation now (see release_one in release_stale.lua); idempotent: a settled or
-- released one is gone already. KEYS[1] account  KEYS[2] reservations  KEYS[3] expiry zset
-- ARGV[1] generation id. Returns 1 when something was held.
return release_one(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
