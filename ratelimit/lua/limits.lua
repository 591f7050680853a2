-- Rate-limit counters, prepended to the admission script so that the limits are checked and
-- counted in the same atomic step as the balance: a refused request takes nothing from anything.
-- KEYS from k0: the account's override hash, then one counter per limit.
-- ARGV from a0: the number of limits n, then per limit: name, shadow ("1"/"0"), counter ttl
-- seconds, tiers "min_purchased_nanos:requests;..." from the lowest tier up.
-- limits_check returns (index of the first limit this request would exceed, or 0) and a flat list
-- {count, limit, count, limit, ...}; a limit of -1 means unlimited (an operator's override);
-- limits_lease takes a slice of each window for a lease.

-- The limit that applies: an operator's override, else the highest tier the purchases reach.
local function limit_of(purchased, k0, base)
  local override = redis.call('HGET', KEYS[k0], ARGV[base])
  if override then return tonumber(override) end
  local limit = -1
  for floor, requests in string.gmatch(ARGV[base + 3], '(%d+):(%d+)') do
    if purchased >= tonumber(floor) then limit = tonumber(requests) end
  end
  return limit
end

local function limits_check(purchased, k0, a0)
  local n = tonumber(ARGV[a0])
  local out = {}
  local refused = 0
  for i = 1, n do
    local base = a0 + 1 + (i - 1) * 4
    local limit = limit_of(purchased, k0, base)
    local count = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
    out[#out + 1] = count
    out[#out + 1] = limit
    if refused == 0 and ARGV[base + 1] == '0' and limit >= 0 and count + 1 > limit then
      refused = i
    end
  end
  return refused, out
end

-- A lease's slice of each window (metering/lua/lease.lua): `want` requests counted at once for a
-- gateway process that admits them itself, at most half of what the window has left (a shadow
-- limit, or an unlimited override, gives what is asked). Returns {count before, limit, taken,
-- ...}; a window with nothing to spare gives 0, and the process admits the usual way.
local function limits_lease(purchased, k0, a0, want)
  local n = tonumber(ARGV[a0])
  local out = {}
  for i = 1, n do
    local base = a0 + 1 + (i - 1) * 4
    local limit = limit_of(purchased, k0, base)
    local count = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
    local take = want
    if ARGV[base + 1] == '0' and limit >= 0 then
      take = math.max(math.min(want, math.floor((limit - count) / 2)), 0)
    end
    if take > 0 and redis.call('INCRBY', KEYS[k0 + i], take) == take then
      redis.call('EXPIRE', KEYS[k0 + i], tonumber(ARGV[base + 2]))
    end
    out[#out + 1] = count
    out[#out + 1] = limit
    out[#out + 1] = take
  end
  return out
end

-- Count the admitted request in every window it matched; a new window's key expires by itself.
local function limits_commit(k0, a0, out)
  local n = tonumber(ARGV[a0])
  for i = 1, n do
    local count = redis.call('INCR', KEYS[k0 + i])
    if count == 1 then
      redis.call('EXPIRE', KEYS[k0 + i], tonumber(ARGV[a0 + 1 + (i - 1) * 4 + 2]))
    end
    out[(i - 1) * 2 + 1] = count
  end
end

