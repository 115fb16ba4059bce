-- A page of a topic's members with their records, read in one step.
-- KEYS: members, info. ARGV: from ('-' or '(' .. name), count.
-- Returns {name, info, name, info, ...}.
local names = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, ARGV[2])
local out = {}
if #names == 0 then return out end
local infos = redis.call('HMGET', KEYS[2], unpack(names))
for i, n in ipairs(names) do
  out[#out + 1] = n
  out[#out + 1] = infos[i] or ''
end
return out
