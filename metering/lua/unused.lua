-- Prelude: how much of each credit lot is still unused. Credits are used oldest lot first, so the
-- balance belongs to the newest lots: walking from the newest, each lot holds what is left of the
-- balance, up to what refunds and expiry have left of it.
-- Returns a table lot id -> unused nanos, for every lot in KEYS[lots] (newest first).
local function unused_by_lot(balance, lots_key, remainders_key)
  local out = {}
  local left = math.max(balance, 0)
  local ids = redis.call('ZREVRANGE', lots_key, 0, -1)
  for _, id in ipairs(ids) do
    local remainder = tonumber(redis.call('HGET', remainders_key, id) or '0')
    local take = math.min(left, remainder)
    out[id] = take
    left = left - take
  end
  return out
end

