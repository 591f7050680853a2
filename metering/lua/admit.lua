-- Admission: key state, expired reservations, balance, limits, affordability and the
-- reservation, in one atomic step so that two racing requests can never both spend the same
-- credit, and a refused request takes nothing from any balance or counter.
-- A prelude defines limits_check(purchased, k0, a0, now) and limits_commit(k0, a0, out, gid,
-- expiry) (the rate limits, a request in flight held until the reservation's expiry; true when
-- the request holds something of them; see no_limits.lua for the empty ones); they read KEYS
-- from 5 and ARGV from 9.
-- KEYS[1] account hash   KEYS[2] api key hash   KEYS[3] reservations (gid -> nanos)
-- KEYS[4] reservation expiry zset (gid -> expiry ms)
-- ARGV[1] now ms  ARGV[2] generation id  ARGV[3] reserve nanos  ARGV[4] expiry ms
-- ARGV[5] "1" when the model is paid  ARGV[6..8] this UTC day, week (from Monday) and month
-- Returns {status, balance, reserved, refusing limit index, {count, limit, ...}, lifetime
-- purchases, what the key's credit limit leaves (-1: no limit)}; the last two are absent before
-- the account is found; status: ok | no_key | disabled | expired | management_key | no_account |
-- negative_balance | key_limit | rate_limited | insufficient
local now = tonumber(ARGV[1])
local key = redis.call('HMGET', KEYS[2], 'created_at', 'disabled', 'expires_at', 'limit',
                      'limit_reset', 'usage', 'usage_daily', 'day', 'usage_weekly', 'week',
                      'usage_monthly', 'month', 'management')
if not key[1] then return {'no_key', 0, 0, 0, {}} end
if key[2] == '1' then return {'disabled', 0, 0, 0, {}} end
if key[3] and key[3] ~= '' and tonumber(key[3]) <= now then return {'expired', 0, 0, 0, {}} end
if key[13] == '1' then return {'management_key', 0, 0, 0, {}} end

release_stale(KEYS[1], KEYS[3], KEYS[4], now)

local acct = redis.call('HMGET', KEYS[1], 'balance', 'reserved', 'purchased')
if not acct[1] then return {'no_account', 0, 0, 0, {}} end
local balance = tonumber(acct[1])
local reserved = tonumber(acct[2] or '0')
local purchased = tonumber(acct[3] or '0')
-- A retry of an admission that already happened (its reply was lost) changes nothing.
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
  return {'ok', balance, reserved, 0, {}, purchased, -1}
end
if balance < 0 then return {'negative_balance', balance, reserved, 0, {}, purchased, -1} end

-- The key's own credit limit, over its reset period (a period's usage counts while its stamp is
-- the current one).
local amount = tonumber(ARGV[3])
local key_left = -1
if key[4] and key[4] ~= '' then
  local used = tonumber(key[6] or '0')
  if key[5] == 'daily' then
    used = (key[8] == ARGV[6]) and tonumber(key[7] or '0') or 0
  elseif key[5] == 'weekly' then
    used = (key[10] == ARGV[7]) and tonumber(key[9] or '0') or 0
  elseif key[5] == 'monthly' then
    used = (key[12] == ARGV[8]) and tonumber(key[11] or '0') or 0
  end
  key_left = math.max(tonumber(key[4]) - used, 0)
  if ARGV[5] == '1' and amount > key_left then
    return {'key_limit', balance, reserved, 0, {}, purchased, key_left}
  end
end

local refused, counts = limits_check(purchased, 5, 9, now)
if refused > 0 then
  return {'rate_limited', balance, reserved, refused, counts, purchased, key_left}
end

if ARGV[5] == '1' and amount > balance - reserved then
  return {'insufficient', balance, reserved, 0, counts, purchased, key_left}
end
if amount > 0 then
  reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount)
end
-- A request that reserves no money but holds tokens or a place in flight is marked admitted
-- all the same (held at 0, as a tombstone is), so that a retry of its admission takes nothing.
if limits_commit(5, 9, counts, ARGV[2], tonumber(ARGV[4])) or amount > 0 then
  redis.call('HSET', KEYS[3], ARGV[2], amount)
  redis.call('ZADD', KEYS[4], tonumber(ARGV[4]), ARGV[2])
end
return {'ok', balance, reserved, 0, counts, purchased, key_left}
