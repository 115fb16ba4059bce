-- Applies changes of one node: connections and memberships added or removed,
-- each at most once (the node's owned set says whether it is there), with the
-- online/occupied events and the pending offline/vacated they cause.
-- KEYS: leases, reaping, gens, owned, online, stats, announced, pending, events,
--       then per op: 'c' -> seen:{user}; 'm' -> members:{topic}, info:{topic},
--       tusers:{topic}.
-- ARGV: mode ('own' | 'reap'), node, gen, lease_ms, events ('1' | '0'), cap,
--       id base, seen_ttl_ms, then per op: sign ('+' | '-'), kind ('c' | 'm'),
--       user, conn, and for 'm' the topic, and for '+m' the info JSON.
-- Returns {status, dropped, removed...}: status 1 done, -1 the node holds no
-- lease (own: it was reaped, or Redis lost its data: nothing is written),
-- -2 its generation moved (reap: the node rewrote itself; nothing is written).
-- In 'reap' mode each '-m' applied adds topic, user, conn, info to the reply.
local now = now_ms()
local mode, node, gen = ARGV[1], ARGV[2], ARGV[3]
local events_on = ARGV[5] == '1'
local ev = emitter(KEYS[9], tonumber(ARGV[6]), ARGV[7])
local seen_ttl = ARGV[8]
if mode == 'own' then
  if not redis.call('ZSCORE', KEYS[1], node) then return { -1, 0 } end
else
  if (redis.call('HGET', KEYS[3], node) or '') ~= gen then return { -2, 0 } end
  -- Still working: keep the claim, so no other node takes this one over.
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), node)
end
local owned, online, stats, announced, pending = KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local reply = { 1, 0 }
local a, k = 9, 10
while a <= #ARGV do
  local sign, kind, user, conn = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  if kind == 'c' then
    local seen = KEYS[k]
    k = k + 1
    local entry = 'c\0' .. user .. '\0' .. conn
    if sign == '+' then
      if redis.call('SADD', owned, entry) == 1 then
        redis.call('HINCRBY', stats, 'connections', 1)
        if redis.call('HINCRBY', online, user, 1) == 1 and events_on then
          local key = 'u:' .. user
          redis.call('ZREM', pending, key)
          if redis.call('SADD', announced, key) == 1 then
            ev.emit('user.online', 'user_id', user, now)
          end
        end
      end
    elseif redis.call('SREM', owned, entry) == 1 then
      redis.call('HINCRBY', stats, 'connections', -1)
      if redis.call('HINCRBY', online, user, -1) <= 0 then
        redis.call('HDEL', online, user)
        redis.call('SET', seen, ms(now), 'PX', seen_ttl)
        if events_on then redis.call('ZADD', pending, now, 'u:' .. user) end
      end
    end
  else
    local topic = ARGV[a]
    a = a + 1
    local members, info, tusers = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
    local entry = 'm\0' .. topic .. '\0' .. user .. '\0' .. conn
    local name = user .. '\0' .. conn
    if sign == '+' then
      local data = ARGV[a]
      a = a + 1
      if redis.call('SADD', owned, entry) == 1 then
        redis.call('ZADD', members, 0, name)
        redis.call('HSET', info, name, data)
        redis.call('HINCRBY', tusers, user, 1)
        if events_on and redis.call('ZCARD', members) == 1 then
          local key = 't:' .. topic
          redis.call('ZREM', pending, key)
          if redis.call('SADD', announced, key) == 1 then
            ev.emit('topic.occupied', 'topic', topic, now)
          end
        end
      end
    elseif redis.call('SREM', owned, entry) == 1 then
      local data = redis.call('HGET', info, name)
      redis.call('ZREM', members, name)
      redis.call('HDEL', info, name)
      if redis.call('HINCRBY', tusers, user, -1) <= 0 then redis.call('HDEL', tusers, user) end
      if events_on and redis.call('ZCARD', members) == 0 then
        redis.call('ZADD', pending, now, 't:' .. topic)
      end
      if mode == 'reap' then
        reply[#reply + 1] = topic
        reply[#reply + 1] = user
        reply[#reply + 1] = conn
        reply[#reply + 1] = data or ''
      end
    end
  end
end
reply[2] = ev.dropped
return reply
