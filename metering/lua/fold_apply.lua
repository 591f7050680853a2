-- Count a run of usage entries into the Activity rollups and move the cursor past them, exactly
-- once: nothing is written when the cursor is no longer where the run was read from (another
-- fold counted it first).
-- KEYS[1] the fold's cursor  KEYS[2..] rollup buckets
-- ARGV[1] the cursor the run was read after  ARGV[2] the run's last entry id
-- ARGV[3..] for each bucket in KEYS order: seconds it lives from now, how many fields, then
-- field and increment pairs
if (redis.call('GET', KEYS[1]) or '0-0') ~= ARGV[1] then
  return 0
end
local a = 3
for i = 2, #KEYS do
  local ttl, fields = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, fields do
    redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIRE', KEYS[i], ttl)
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
