-- Ends a reap (or a graceful leave) once the node's owned set is empty: its
-- last keys and records go.
-- KEYS: reaping, owned, gens, leases. ARGV: node, gen.
-- Returns 1 done, 0 entries remain, -2 the generation moved (the node came
-- back: the reap stops and its claim is already gone).
if (redis.call('HGET', KEYS[3], ARGV[1]) or '') ~= ARGV[2] then return -2 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
