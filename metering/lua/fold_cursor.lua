-- The Activity fold's cursor (the last usage entry counted; see metering/rollup_fold.py), set on
-- first use to the stream's last entry: an account that has none yet has had no settlement since
-- the fold began, and its entries were counted by the settlements that wrote them.
local function fold_cursor(cursor_key, stream_key)
  local cursor = redis.call('GET', cursor_key)
  if not cursor then
    local last = redis.call('XREVRANGE', stream_key, '+', '-', 'COUNT', 1)[1]
    cursor = last and last[1] or '0-0'
    redis.call('SET', cursor_key, cursor)
  end
  return cursor
end
