-- Appends one publication to a topic's history and publishes it, in one step.
-- KEYS: stream, meta, origin.
-- ARGV: new_epoch, size, ttl_ms, position_ttl_ms, channel, topic, payload, seq,
--       token (origin:seq, kept with the entry), origin_keep, origin_ttl_ms.
-- Returns {offset, epoch} (offset as a decimal string).
local stream, meta, origin = KEYS[1], KEYS[2], KEYS[3]
local new_epoch, size, ttl, position_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local channel, topic, payload = ARGV[5], ARGV[6], ARGV[7]
local seq, token, origin_keep, origin_ttl = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11]

-- A repeat (the publisher re-sent a batch after a broken link): answer the
-- position it got the first time, append and publish nothing.
local seen = redis.call('ZRANGEBYSCORE', origin, seq, seq, 'LIMIT', 0, 1)[1]
if seen then
  local a = string.find(seen, ' ', 1, true)
  local b = string.find(seen, ' ', a + 1, true)
  return {string.sub(seen, a + 1, b - 1), string.sub(seen, b + 1)}
end

-- A topic without a position starts new_epoch; whatever stream it had belongs
-- to a lost position, so it goes too.
if redis.call('HSETNX', meta, 'epoch', new_epoch) == 1 then
  redis.call('DEL', stream)
end
local epoch = redis.call('HGET', meta, 'epoch')
local offset = string.format('%d', tonumber(redis.call('HGET', meta, 'top') or '0') + 1)

-- XADD first: if it fails, the position has not moved.
redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'p', payload, 'o', token)
redis.call('HSET', meta, 'top', offset)
redis.call('PEXPIRE', stream, ttl)
redis.call('PEXPIRE', meta, position_ttl)

redis.call('ZADD', origin, seq, seq .. ' ' .. offset .. ' ' .. epoch)
redis.call('ZREMRANGEBYRANK', origin, 0, -(origin_keep + 1))
redis.call('PEXPIRE', origin, origin_ttl)

-- The bytes of realtime_core::history::WirePublication::encode.
redis.call('PUBLISH', channel, '\193' .. offset .. ' ' .. epoch .. ' ' .. topic .. '\n' .. payload)
return {offset, epoch}
