-- Drops a topic's publications and starts new_epoch at offset 0.
-- KEYS: stream, meta.
-- ARGV: new_epoch, position_ttl_ms.
-- Returns {offset, epoch}. A repeat (the same new_epoch, re-sent by the publisher
-- after a broken link) changes nothing: it must not drop what others appended
-- since the first run.
local stream, meta = KEYS[1], KEYS[2]
local new_epoch, position_ttl = ARGV[1], ARGV[2]
if redis.call('HGET', meta, 'epoch') ~= new_epoch then
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', new_epoch, 'top', '0')
  redis.call('PEXPIRE', meta, position_ttl)
end
return {'0', new_epoch}
