-- The usage stream's entries the Activity rollups have not counted yet, oldest first.
-- KEYS[1] the fold's cursor (the last entry counted)  KEYS[2] usage stream  ARGV[1] at most this many
-- Returns {cursor, entries}. An account with no cursor yet has had no settlement since the fold
-- began (settle.lua sets it first): its entries were counted when written, so the cursor starts
-- after them, as settle.lua would start it.
local cursor = redis.call('GET', KEYS[1])
if not cursor then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  cursor = last and last[1] or '0-0'
  redis.call('SET', KEYS[1], cursor)
end
return {cursor, redis.call('XRANGE', KEYS[2], '(' .. cursor, '+', 'COUNT', ARGV[1])}
