-- The usage stream's entries the Activity rollups have not counted yet, oldest first.
-- KEYS[1] the fold's cursor (the last entry counted)  KEYS[2] usage stream  ARGV[1] at most this many
-- Returns {cursor, entries}: a cursor not yet set reads as '0-0'.
local cursor = redis.call('GET', KEYS[1]) or '0-0'
return {cursor, redis.call('XRANGE', KEYS[2], '(' .. cursor, '+', 'COUNT', ARGV[1])}
