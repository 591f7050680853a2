-- Settlement of one or more requests of one account: release each reservation, debit the exact
-- costs, count the keys' usage, store the usage records, and give back what else each request
-- held (its place in flight, its tokens' worst case: the limit hooks' limits_release). Idempotent
-- on each generation id: a record's key is the proof it was applied. Several records (those of
-- one account that settle in the same turn of a gateway's loop) share one call: the account's
-- counters, its usage by day and its keys' counters are written once for all of them.
-- KEYS[1] account  KEYS[2] reservations  KEYS[3] reservation expiry  KEYS[4] usage stream
-- KEYS[5] usage by UTC day (the ledger's entries)  KEYS[6] outbox (auto top-up requests to
-- deliver)  KEYS[7] the Activity rollups' fold cursor; then for each record: its API key, its
-- generation key, and the m keys of what else it holds
-- ARGV[1] record ttl seconds  ARGV[2] raw record retention ms  ARGV[3] id for a top-up request,
-- if one is due  ARGV[4] how long an unanswered top-up request stays outstanding (ms); then for
-- each record: generation id, cost nanos, record json, now ms (its rollup time), day, week
-- and month stamps, the lease that admitted it ('' when its admission reserved for it alone:
-- see lease.lua; the cost is drawn from the lease, as much as it still holds), m, then for each
-- of its m held keys: kind and amount (limits_release's)
-- Returns {1 when a top-up request was queued, then per record: status, balance after it, then
-- the account's lease epoch}; status: ok | duplicate
local per = 9  -- a record's own arguments, before its holds' pairs
local at = {}  -- each record's first key and the index before its first argument
do
  local k, a = 8, 4
  while k <= #KEYS do
    at[#at + 1] = {k, a}
    local m = tonumber(ARGV[a + per])
    if not m or not tonumber(ARGV[a + 2]) then  -- before any write: a script stopped half way
      return redis.error_reply('ERR settlement: record ' .. #at .. ' is malformed')
    end
    k, a = k + 2 + m, a + per + 2 * m
  end
end
local records = #at
local replies = {0}
local released, spent = 0, 0
local spent_after = {}  -- what the records up to each one spent
local by_day, by_key, key_order = {}, {}, {}
local now_ms = 0

-- Raw records are kept for the retention period (ARGV[2] ms), trimmed a little at a time; the
-- stream's ids are the server's clock, so the cut-off is too. A record is stored once, in the
-- stream: its generation's key holds its entry id, for lookups by id (and as the proof that it
-- was applied). "~" trims only whole nodes of entries past the cut-off, so an entry outlives its
-- key. The Activity rollups are folded from this stream by metering/rollup_fold.py, which keeps
-- the last entry it counted in KEYS[7]: nothing past that is trimmed, so no record is lost to the
-- rollups however late the fold, and an account's first record here starts the fold's cursor at
-- the entries before it (written by a settlement that rolled them up itself). Field 't' is the
-- record's rollup time, and marks the entries that are the fold's to count.
local t = redis.call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local folded = fold_cursor(KEYS[7], KEYS[4])
oldest = math.max(math.min(oldest, tonumber(string.match(folded, '^%d+'))), 0)

for i = 1, records do
  local k, a = at[i][1], at[i][2]
  local id, cost, lease = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 8]
  local key, generation = KEYS[k], KEYS[k + 1]
  if redis.call('EXISTS', generation) == 1 then
    replies[2 * i] = 'duplicate'
  else
    replies[2 * i] = 'ok'
    for j = 1, tonumber(ARGV[a + per]) do
      limits_release(KEYS[k + 1 + j], ARGV[a + per + 2 * j - 1],
                     tonumber(ARGV[a + per + 2 * j]), id)
    end
    local held = redis.call('HGET', KEYS[2], lease == '' and id or lease)
    if held and lease == '' then
      released = released + tonumber(held)
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
    elseif held then
      local drawn = math.min(tonumber(held), cost)
      if drawn > 0 then
        released = released + drawn
        redis.call('HINCRBY', KEYS[2], lease, -drawn)
      end
    end
    if cost > 0 then
      spent = spent + cost
      local day = ARGV[a + 5]
      by_day[day] = (by_day[day] or 0) + cost
      -- A key's usage is counted per its records' UTC periods (in one turn: nearly always one).
      local group = key .. '\n' .. day .. '\n' .. ARGV[a + 6] .. '\n' .. ARGV[a + 7]
      if not by_key[group] then
        by_key[group] = {key, day, ARGV[a + 6], ARGV[a + 7], 0}
        key_order[#key_order + 1] = group
      end
      by_key[group][5] = by_key[group][5] + cost
    end
    now_ms = tonumber(ARGV[a + 4])
    local entry = redis.call('XADD', KEYS[4], 'MINID', '~', oldest, '*', 'r', ARGV[a + 3],
                             't', ARGV[a + 4])
    redis.call('SET', generation, entry, 'EX', tonumber(ARGV[1]))
  end
  spent_after[i] = spent
end

if released > 0 then
  redis.call('HINCRBY', KEYS[1], 'reserved', -released)
end
local balance
if spent > 0 then
  balance = redis.call('HINCRBY', KEYS[1], 'balance', -spent)
  redis.call('HINCRBY', KEYS[1], 'usage', spent)
  for day, cost in pairs(by_day) do
    redis.call('HINCRBY', KEYS[5], day, cost)
  end
  -- Per-key usage by UTC period: a period's counter restarts when its stamp changes.
  for _, group in ipairs(key_order) do
    local g = by_key[group]
    local key, cost = g[1], g[5]
    local k = redis.call('HMGET', key, 'day', 'week', 'month')
    local periods = {{'day', 'usage_daily'}, {'week', 'usage_weekly'}, {'month', 'usage_monthly'}}
    for p, period in ipairs(periods) do
      if k[p] ~= g[1 + p] then
        redis.call('HSET', key, period[1], g[1 + p], period[2], cost)
      else
        redis.call('HINCRBY', key, period[2], cost)
      end
    end
    redis.call('HINCRBY', key, 'usage', cost)
  end
else
  balance = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
end
-- Each record's balance: what the account had after it (the debit above is all of theirs).
for i = 1, records do
  replies[2 * i + 1] = balance + spent - spent_after[i]
end

-- Auto top-up: below the threshold, queue one request for a purchase in the account's outbox,
-- unless one is already outstanding (until the purchase arrives or the request fails).
if spent > 0 then
  local t = redis.call('HMGET', KEYS[1], 'topup_threshold', 'topup_amount', 'topup_pending',
                      'topup_pending_ms')
  -- An outstanding request that nothing answered within ARGV[4] ms no longer blocks a new one.
  local outstanding = t[3] and t[3] ~= '' and
                      now_ms - tonumber(t[4] or '0') < tonumber(ARGV[4])
  if t[1] and t[1] ~= '' and not outstanding and balance < tonumber(t[1]) then
    local event = cjson.encode({id = ARGV[3], created_ms = string.format('%d', now_ms),
                                amount = t[2], threshold = t[1],
                                balance = string.format('%d', balance)})
    redis.call('RPUSH', KEYS[6], event)
    redis.call('HSET', KEYS[1], 'topup_pending', ARGV[3], 'topup_pending_ms',
               string.format('%d', now_ms))
    replies[1] = 1
  end
end
replies[2 * records + 2] = redis.call('HGET', KEYS[1], 'lease_epoch') or '0'
return replies
