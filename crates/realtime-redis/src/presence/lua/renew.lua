-- Renews a node's lease. With a new generation (the node is rewriting itself)
-- the lease is taken even if it was gone, and any reaper of the node's older
-- generation stops at its next step.
-- KEYS: leases, reaping, gens. ARGV: node, lease_ms, gen ('' to keep it).
-- Returns {had, renewed}: whether the lease was there; whether it is now (a
-- plain renewal of a missing lease takes nothing: the node must rewrite itself).
local now = now_ms()
local had = redis.call('ZSCORE', KEYS[1], ARGV[1]) and 1 or 0
if ARGV[3] == '' then
  if had == 0 then return { 0, 0 } end
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return { had, 1 }
