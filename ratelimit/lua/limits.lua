-- Rate-limit counters, prepended to the admission script so that the limits are checked and
-- counted in the same atomic step as the balance: a refused request takes nothing from anything.
-- KEYS from k0: the account's override hash, then one counter per limit.
-- ARGV from a0: the number of limits n, then per limit: name, shadow ("1"/"0"), counter ttl
-- seconds, tiers "min_purchased_nanos:requests;..." from the lowest tier up.
-- limits_check returns (index of the first limit this request would exceed, or 0) and a flat list
-- {count, limit, count, limit, ...}; a limit of -1 means unlimited (an operator's override).
local function limits_check(purchased, k0, a0)
  local n = tonumber(ARGV[a0])
  local out = {}
  local refused = 0
  for i = 1, n do
    local base = a0 + 1 + (i - 1) * 4
    local limit = -1
    local override = redis.call('HGET', KEYS[k0], ARGV[base])
    if override then
      limit = tonumber(override)
    else
      for floor, requests in string.gmatch(ARGV[base + 3], '(%d+):(%d+)') do
        if purchased >= tonumber(floor) then limit = tonumber(requests) end
      end
    end
    local count = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
    out[#out + 1] = count
    out[#out + 1] = limit
    if refused == 0 and ARGV[base + 1] == '0' and limit >= 0 and count + 1 > limit then
      refused = i
    end
  end
  return refused, out
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

