-- An account's purchases as its holder sees them, read in one step so that they agree: what of
-- each credit lot is still unused (by the same walk as refunds and expiry: unused.lua), every
-- purchase, and every refund. Reads only.
-- KEYS[1] account  KEYS[2] lots  KEYS[3] lot remainders  KEYS[4] purchases  KEYS[5] refunds
-- Returns {{lot, unused nanos, ...}, {purchase id, json, ...}, {purchase id, refund json, ...}}
local balance = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
local unused = {}
for lot, amount in pairs(unused_by_lot(balance, KEYS[2], KEYS[3])) do
  unused[#unused + 1] = lot
  unused[#unused + 1] = string.format('%d', amount)
end
return {unused, redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5])}
