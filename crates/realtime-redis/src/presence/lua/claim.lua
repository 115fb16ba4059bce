-- Claims one dead node for reaping: one whose lease ran out, or whose reaper
-- stopped renewing its claim. The ZREM happens here, so exactly one caller
-- gets each dead node.
-- KEYS: leases, reaping, gens. ARGV: the caller's node, lease_ms.
-- Returns {node, gen}, or nil when no node is due.
local now = now_ms()
local function pick(key)
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', ms(now), 'LIMIT', 0, 2)) do
    if n ~= ARGV[1] then return n end
  end
  return nil
end
local node = pick(KEYS[1])
if node then
  redis.call('ZREM', KEYS[1], node)
else
  node = pick(KEYS[2])
end
if not node then return nil end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), node)
return { node, redis.call('HGET', KEYS[3], node) or '' }
