-- Expire the unused part of every purchase older than the credit lifetime, oldest first, as one
-- ledger entry each. Safe to run from several processes at once: an expired lot leaves the lot
-- list in the same step, so nothing expires twice. Credits held by requests in flight wait for
-- the next run.
-- KEYS[1] account  KEYS[2] lots  KEYS[3] lot remainders  KEYS[4] ledger  KEYS[5] reservations
-- KEYS[6] reservation expiry
-- ARGV[1] now ms  ARGV[2] lots created before this have expired (ms x 1000, as lots are scored)
-- Returns the nanodollars expired.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
if #due == 0 then return 0 end
release_stale(KEYS[1], KEYS[5], KEYS[6], tonumber(ARGV[1]))
local acct = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
local balance, reserved = tonumber(acct[1]), tonumber(acct[2] or '0')
local spare = math.max(balance - reserved, 0)
local unused = unused_by_lot(balance, KEYS[2], KEYS[3])
local total = 0
for _, id in ipairs(due) do
  if id ~= 'grant' then
    local amount = math.min(unused[id] or 0, spare)
    if amount < (unused[id] or 0) then break end  -- held credits: this lot waits for next time
    if amount > 0 then
      spare = spare - amount
      total = total + amount
      redis.call('HINCRBY', KEYS[3], id, -amount)
      redis.call('XADD', KEYS[4], '*', 'kind', 'expiry', 'amount', -amount, 'ref', id,
                 'ms', ARGV[1])
    end
    redis.call('ZREM', KEYS[2], id)
  end
end
if total > 0 then
  redis.call('HINCRBY', KEYS[1], 'balance', -total)
  redis.call('HINCRBY', KEYS[1], 'expired', total)
end
return total
