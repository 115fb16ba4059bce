-- Reads a topic's position and publications after an offset, in one atomic view.
-- KEYS: stream, meta.
-- ARGV: new_epoch, position_ttl_ms, after ('' = from the oldest held), limit.
-- Returns {epoch, top, first, id1, payload1, id2, payload2, ...}.
local stream, meta = KEYS[1], KEYS[2]
local new_epoch, position_ttl, after, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

-- As in append.lua: a topic without a position starts new_epoch, so the position
-- this read answers is one that later appends continue.
if redis.call('HSETNX', meta, 'epoch', new_epoch) == 1 then
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'top', '0')
  redis.call('PEXPIRE', meta, position_ttl)
end
local epoch = redis.call('HGET', meta, 'epoch')
local top = redis.call('HGET', meta, 'top') or '0'

local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
local first
if oldest then
  first = string.sub(oldest[1], 1, string.find(oldest[1], '-', 1, true) - 1)
else
  first = string.format('%d', tonumber(top) + 1)
end

local out = {epoch, top, first}
if limit > 0 then
  local start = '-'
  if after ~= '' then
    start = string.format('%d-0', tonumber(after) + 1)
  end
  for _, entry in ipairs(redis.call('XRANGE', stream, start, '+', 'COUNT', limit)) do
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then
        out[#out + 1] = entry[1]
        out[#out + 1] = fields[i + 1]
      end
    end
  end
end
return out
