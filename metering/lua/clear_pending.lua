-- Clear an account's outstanding auto top-up request, only if it is still this one (a newer
-- request stays outstanding). KEYS[1] account  ARGV[1] event id. Returns 1 when cleared.
if redis.call('HGET', KEYS[1], 'topup_pending') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'topup_pending', 'topup_pending_ms')
  return 1
end
return 0
