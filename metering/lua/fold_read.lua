-- The usage stream's entries the Activity rollups have not counted yet, oldest first.
-- KEYS[1] the fold's cursor (the last entry counted)  KEYS[2] usage stream  KEYS[3] the
-- background fold's lease  ARGV[1] at most this many  ARGV[2] the background fold asking (empty
-- for a read's fold, which never waits)  ARGV[3] how long its lease lasts (ms)
-- Returns {cursor, entries}, or {'busy'} when another process's background fold holds the lease
-- (it reads what this one would: one reader of a busy account's stream, not one a gateway).
if ARGV[2] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then
    return {'busy'}
  end
  redis.call('SET', KEYS[3], ARGV[2], 'PX', tonumber(ARGV[3]))
end
local cursor = fold_cursor(KEYS[1], KEYS[2])
return {cursor, redis.call('XRANGE', KEYS[2], '(' .. cursor, '+', 'COUNT', ARGV[1])}
