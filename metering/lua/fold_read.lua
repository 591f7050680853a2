-- The usage stream's entries the Activity rollups have not counted yet, oldest first.
-- KEYS[1] the fold's cursor (the last entry counted)  KEYS[2] usage stream  KEYS[3] the
-- background fold's lease  ARGV[1] at most this many  ARGV[2] the background fold asking (empty
-- for a read's fold, which never waits)  ARGV[3] how long its lease lasts (ms)
-- Returns {cursor, entries}, or {'busy'} when another process's background fold holds the lease
-- (it reads what this one would: one reader of a busy account's stream, not one a gateway).
-- An account with no cursor yet has had no settlement since the fold began (settle.lua sets it
-- first): its entries were counted when written, so the cursor starts after them, as settle.lua
-- would start it.
if ARGV[2] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then
    return {'busy'}
  end
  redis.call('SET', KEYS[3], ARGV[2], 'PX', tonumber(ARGV[3]))
end
local cursor = redis.call('GET', KEYS[1])
if not cursor then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  cursor = last and last[1] or '0-0'
  redis.call('SET', KEYS[1], cursor)
end
return {cursor, redis.call('XRANGE', KEYS[2], '(' .. cursor, '+', 'COUNT', ARGV[1])}
