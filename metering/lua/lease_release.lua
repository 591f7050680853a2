-- Give back a delivery lease only if this holder still has it: a pass that outlived its lease
-- must not end another process's. KEYS[1] the lease  ARGV[1] the holder. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
