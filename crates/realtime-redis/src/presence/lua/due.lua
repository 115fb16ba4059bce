-- The pending offline/vacated entries whose grace has passed.
-- KEYS: pending. ARGV: grace_ms, limit.
local now = now_ms()
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms(now - tonumber(ARGV[1])),
  'LIMIT', 0, ARGV[2])
