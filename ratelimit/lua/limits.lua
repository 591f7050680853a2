-- Rate-limit counters, prepended to the admission script so that the limits are checked and
-- counted in the same atomic step as the balance: a refused request takes nothing from anything.
-- KEYS from k0: the account's override hash, then one key per limit: a window's counter (requests
-- or tokens), or the sorted set of the requests in flight (gid -> expiry ms) for a concurrency
-- limit.
-- ARGV from a0: the number of limits n, then per limit six: name, shadow ("1"/"0"), the key's ttl
-- seconds, tiers "min_purchased_nanos:count;..." from the lowest tier up, kind ("r" requests,
-- "t" tokens, "c" in flight) and what this request takes (1 request, its worst case in tokens).
-- limits_check returns (index of the first limit this request would exceed, or 0) and a flat list
-- {count, limit, count, limit, ...}; a limit of -1 means unlimited (an operator's override);
-- limits_lease takes a slice of each request window for a lease; limits_release gives back what a
-- settled (or abandoned) request holds.
local STRIDE = 6

-- The limit that applies: an operator's override, else the highest tier the purchases reach.
local function limit_of(purchased, k0, base)
  local override = redis.call('HGET', KEYS[k0], ARGV[base])
  if override then return tonumber(override) end
  local limit = -1
  for floor, count in string.gmatch(ARGV[base + 3], '(%d+):(%d+)') do
    if purchased >= tonumber(floor) then limit = tonumber(count) end
  end
  return limit
end

-- What a limit's key counts now; in-flight requests past their expiry (their gateway died) first
-- leave it.
local function count_of(key, kind, now)
  if kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    return redis.call('ZCARD', key)
  end
  return tonumber(redis.call('GET', key) or '0')
end

local function limits_check(purchased, k0, a0, now)
  local n = tonumber(ARGV[a0])
  local out = {}
  local refused = 0
  for i = 1, n do
    local base = a0 + 1 + (i - 1) * STRIDE
    local limit = limit_of(purchased, k0, base)
    local count = count_of(KEYS[k0 + i], ARGV[base + 4], now)
    out[#out + 1] = count
    out[#out + 1] = limit
    if refused == 0 and ARGV[base + 1] == '0' and limit >= 0 and
       count + tonumber(ARGV[base + 5]) > limit then
      refused = i
    end
  end
  return refused, out
end

-- A lease's slice of each window (metering/lua/lease.lua): what `want` requests like the asking
-- one take (a request each, or its worst case in tokens), counted at once for a gateway process
-- that admits them itself: whole requests' worth, at most half of what the window has left (a
-- shadow limit, or an unlimited override, gives what is asked). All or nothing: when a window
-- cannot spare one request's worth, no window gives a slice (one alone could admit nothing), and
-- the process admits the usual way, exact to the window's end. Windows only: the gateway never
-- leases a request that takes a place in flight (that place must be held in Redis, to be given
-- back when its gateway dies). Returns {count before, limit, taken, ...}.
local function limits_lease(purchased, k0, a0, want)
  local n = tonumber(ARGV[a0])
  local out = {}
  local takes = {}
  local spare_all = true
  for i = 1, n do
    local base = a0 + 1 + (i - 1) * STRIDE
    local limit = limit_of(purchased, k0, base)
    local count = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
    local per = tonumber(ARGV[base + 5])
    local take = want * per
    if ARGV[base + 1] == '0' and limit >= 0 then
      local spare = math.max(math.floor((limit - count) / 2), 0)
      if per > 0 then spare = spare - spare % per end
      take = math.min(take, spare)
      if take < per then spare_all = false end
    end
    takes[i] = take
    out[#out + 1] = count
    out[#out + 1] = limit
    out[#out + 1] = take
  end
  for i = 1, n do
    local take = spare_all and takes[i] or 0
    out[3 * i] = take
    if take > 0 and redis.call('INCRBY', KEYS[k0 + i], take) == take then
      redis.call('EXPIRE', KEYS[k0 + i], tonumber(ARGV[a0 + 1 + (i - 1) * STRIDE + 2]))
    end
  end
  return out
end

-- Count the admitted request (`gid`, held in flight until `expiry` ms unless renewed) in every
-- limit it matched; a new window's key expires by itself. Returns true when the request holds
-- something to give back (tokens, or a place in flight): the admission then marks it as admitted
-- even when it reserves no money, so that a retry of it counts nothing again.
local function limits_commit(k0, a0, out, gid, expiry)
  local n = tonumber(ARGV[a0])
  local holds = false
  for i = 1, n do
    local base = a0 + 1 + (i - 1) * STRIDE
    local key, kind, ttl = KEYS[k0 + i], ARGV[base + 4], tonumber(ARGV[base + 2])
    local count
    if kind == 'c' then
      redis.call('ZADD', key, expiry, gid)
      redis.call('EXPIRE', key, ttl)
      count = redis.call('ZCARD', key)
      holds = true
    else
      local take = tonumber(ARGV[base + 5])
      count = redis.call('INCRBY', key, take)
      if count == take then
        redis.call('EXPIRE', key, ttl)
      end
      holds = holds or kind == 't'
    end
    out[(i - 1) * 2 + 1] = count
  end
  return holds
end

-- What request `gid` held goes back: its place in flight ("c"), or `amount` tokens of its window's
-- reserve ("t": the true-up, negative when it used less than its worst case; a window already
-- gone stays gone).
local function limits_release(key, kind, amount, gid)
  if kind == 'c' then
    redis.call('ZREM', key, gid)
  elseif amount ~= 0 and redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, amount)
  end
end
