-- A lease: a slice of what a busy account can spend, held by one gateway process as a reservation
-- of its own, so that it admits that account's requests without a round trip each (see
-- metering/leasing/leases.py). Each renewal moves the lease to a new id (`lease-<process>-<term>`),
-- dropping every other id of the same process (its older terms, and any a renewal whose reply was
-- lost left behind; the account's lease ids are listed in KEYS[5]): the new one holds what the
-- process's admitted requests may still cost (ARGV[4], counted by the process) plus a new slice
-- of at most ARGV[5], and never more than half of what is free beside it, so other processes and
-- one-round-trip admissions keep the rest. Settlement draws each
-- cost from the lease that admitted it (settle.lua). A lease of a process that died expires as a
-- reservation does (release_stale). No new slice while the balance is negative or while a refund
-- has recalled the account's leases (refund.lua: `lease_pause_until`); `lease_epoch` changes when
-- a refund recalls them or one of the account's keys changes, and processes then give back
-- their slices.
-- KEYS[1] account  KEYS[2] reservations  KEYS[3] reservation expiry  KEYS[4] the API key asking
-- KEYS[5] the account's lease ids (a set)  KEYS[6] each process's last renewal applied (a hash:
-- id prefix -> term), then m rate-limit counters whose unused slices the process gives back,
-- then the limit hooks' keys (see admit.lua) of the asking request's limits
-- ARGV[1] now ms  ARGV[2] the process's lease id prefix  ARGV[3] the new id  ARGV[4] keep nanos
-- ARGV[5] slice wanted  ARGV[6] expiry ms  ARGV[7] "1" to check the key first  ARGV[8] m, then
-- m counts given back, then how many requests of each limit's window to take, then the limit
-- hooks' arguments. A prelude defines limits_lease (ratelimit/lua/limits.lua): a slice of each
-- window, taken only with a slice of credit.
-- Returns {status, the lease now, balance, reserved, epoch, {count before, limit, taken, ...}};
-- status: ok | no_key | disabled |
-- expired | management_key | key_limit (not leased: the key has a credit limit) | no_account |
-- negative_balance | paused | stale. A key's refusal changes nothing but the slices given back.
-- Renewals of one process are applied in the order of their terms, each once: one that arrives
-- again (a command resent after a lost connection) or after a later one (a stalled connection)
-- changes nothing and answers `stale`.
local now = tonumber(ARGV[1])
local term = tonumber(string.sub(ARGV[3], #ARGV[2] + 1))
if term <= tonumber(redis.call('HGET', KEYS[6], ARGV[2]) or '0') then
  return {'stale', 0, 0, 0, '0'}
end
redis.call('HSET', KEYS[6], ARGV[2], term)

local given = tonumber(ARGV[8])
for i = 1, given do  -- a counter's key names its window: one that ended is gone or past use
  local back = tonumber(ARGV[8 + i])
  if back > 0 and redis.call('EXISTS', KEYS[6 + i]) == 1 then
    redis.call('DECRBY', KEYS[6 + i], back)
  end
end

if ARGV[7] == '1' then
  local key = redis.call('HMGET', KEYS[4], 'created_at', 'disabled', 'expires_at', 'management',
                        'limit')
  if not key[1] then return {'no_key', 0, 0, 0, '0'} end
  if key[2] == '1' then return {'disabled', 0, 0, 0, '0'} end
  if key[3] and key[3] ~= '' and tonumber(key[3]) <= now then
    return {'expired', 0, 0, 0, '0'}
  end
  if key[4] == '1' then return {'management_key', 0, 0, 0, '0'} end
  if key[5] and key[5] ~= '' then return {'key_limit', 0, 0, 0, '0'} end
end

release_stale(KEYS[1], KEYS[2], KEYS[3], now)
local acct = redis.call('HMGET', KEYS[1], 'balance', 'reserved', 'lease_epoch', 'lease_pause_until',
                        'purchased')
if not acct[1] then return {'no_account', 0, 0, 0, '0'} end
local balance, reserved = tonumber(acct[1]), tonumber(acct[2] or '0')
local epoch = acct[3] or '0'
local old = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  local held = redis.call('HGET', KEYS[2], id)
  if string.sub(id, 1, #ARGV[2]) == ARGV[2] then
    old = old + tonumber(held or '0')
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('SREM', KEYS[5], id)
  elseif not held then  -- another process's lease that expired (release_stale)
    redis.call('SREM', KEYS[5], id)
  end
end
local others = reserved - old
local keep = tonumber(ARGV[4])
local status, slice = 'ok', 0
if balance < 0 then
  status = 'negative_balance'
elseif acct[4] and tonumber(acct[4]) > now then
  status = 'paused'
else
  slice = math.max(math.min(tonumber(ARGV[5]), math.floor((balance - others - keep) / 2)), 0)
end
local lease = keep + slice
if lease > 0 then
  redis.call('HSET', KEYS[2], ARGV[3], lease)
  redis.call('ZADD', KEYS[3], tonumber(ARGV[6]), ARGV[3])
  redis.call('SADD', KEYS[5], ARGV[3])
end
if lease ~= old then
  reserved = redis.call('HINCRBY', KEYS[1], 'reserved', lease - old)
end
local counts = {}
if slice > 0 then
  counts = limits_lease(tonumber(acct[5] or '0'), 7 + given, 10 + given, tonumber(ARGV[9 + given]))
end
return {status, lease, balance, reserved, epoch, counts}
