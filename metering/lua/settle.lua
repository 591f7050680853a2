-- Settlement: release the reservation, debit the exact cost, count the key's usage, store the
-- usage record. Idempotent on the generation id: the record's key is the proof it was applied.
-- KEYS[1] account  KEYS[2] api key  KEYS[3] reservations  KEYS[4] reservation expiry
-- KEYS[5] generation record  KEYS[6] usage stream  KEYS[7] usage by UTC day (the ledger's entries)
-- KEYS[8] outbox (auto top-up requests to deliver)  KEYS[9] the Activity rollups' fold cursor
-- ARGV[1] generation id  ARGV[2] cost nanos  ARGV[3] record json  ARGV[4] record ttl seconds
-- ARGV[5] day stamp  ARGV[6] week stamp  ARGV[7] month stamp  ARGV[8] raw record retention ms
-- ARGV[9] id for a top-up request, if one is due  ARGV[10] now ms (the record's rollup time)
-- ARGV[11] how long an unanswered top-up request stays outstanding (ms)
-- Returns {status, balance, 1 when a top-up request was queued}; status: ok | duplicate
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {'duplicate', tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')}
end
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
local cost = tonumber(ARGV[2])
local balance
if cost > 0 then
  balance = redis.call('HINCRBY', KEYS[1], 'balance', -cost)
  redis.call('HINCRBY', KEYS[1], 'usage', cost)
  redis.call('HINCRBY', KEYS[7], ARGV[5], cost)
  -- Per-key usage by UTC period: a period's counter restarts when its stamp changes.
  local k = redis.call('HMGET', KEYS[2], 'day', 'week', 'month')
  local stamps = {{'day', 'usage_daily', ARGV[5]}, {'week', 'usage_weekly', ARGV[6]},
                  {'month', 'usage_monthly', ARGV[7]}}
  for i, s in ipairs(stamps) do
    if k[i] ~= s[3] then
      redis.call('HSET', KEYS[2], s[1], s[3], s[2], cost)
    else
      redis.call('HINCRBY', KEYS[2], s[2], cost)
    end
  end
  redis.call('HINCRBY', KEYS[2], 'usage', cost)
else
  balance = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
end
-- Raw records are kept for the retention period (ARGV[8] ms), trimmed a little at a time; the
-- stream's ids are the server's clock, so the cut-off is too. The record is stored once, in the
-- stream: the generation's key holds its entry id, for lookups by id (and as the proof that it was
-- applied). "~" trims only whole nodes of entries past the cut-off, so an entry outlives its key.
-- The Activity rollups are folded from this stream by metering/rollup_fold.py, which keeps the
-- last entry it folded in KEYS[9]: nothing past that is trimmed, so no record is lost to the
-- rollups however late the fold, and an account's first record here starts the fold's cursor at
-- the entries before it (written by a settlement that rolled them up itself). Its field 't' is
-- the record's rollup time, and marks the entries that are the fold's to count.
local t = redis.call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[8])
local folded = redis.call('GET', KEYS[9])
if not folded then
  local last = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)[1]
  folded = last and last[1] or '0-0'
  redis.call('SET', KEYS[9], folded)
end
oldest = math.min(oldest, tonumber(string.match(folded, '^%d+')))
local entry = redis.call('XADD', KEYS[6], 'MINID', '~', math.max(oldest, 0), '*', 'r', ARGV[3],
                         't', ARGV[10])
redis.call('SET', KEYS[5], entry, 'EX', tonumber(ARGV[4]))

-- Auto top-up: below the threshold, queue one request for a purchase in the account's outbox,
-- unless one is already outstanding (until the purchase arrives or the request fails).
local topup = 0
if cost > 0 then
  local t = redis.call('HMGET', KEYS[1], 'topup_threshold', 'topup_amount', 'topup_pending',
                      'topup_pending_ms')
  -- An outstanding request that nothing answered within ARGV[11] ms no longer blocks a new one.
  local outstanding = t[3] and t[3] ~= '' and
                      tonumber(ARGV[10]) - tonumber(t[4] or '0') < tonumber(ARGV[11])
  if t[1] and t[1] ~= '' and not outstanding and balance < tonumber(t[1]) then
    local event = cjson.encode({id = ARGV[9], created_ms = ARGV[10], amount = t[2],
                                threshold = t[1], balance = string.format('%d', balance)})
    redis.call('RPUSH', KEYS[8], event)
    redis.call('HSET', KEYS[1], 'topup_pending', ARGV[9], 'topup_pending_ms', ARGV[10])
    topup = 1
  end
end
return {'ok', balance, topup}
