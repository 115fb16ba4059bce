-- Queues user.offline / topic.vacated for due entries still at zero. Several
-- nodes may sweep the same entries at once: the ZREM and the SREM of the
-- announcement happen here, so each event is queued once.
-- KEYS: pending, announced, online, events, then members:{topic} for each
--       't:' entry, in order.
-- ARGV: grace_ms, cap, id base, then the entries ('u:{user}' / 't:{topic}').
-- Returns the number of events dropped because the stream was full.
local now = now_ms()
local grace = tonumber(ARGV[1])
local ev = emitter(KEYS[4], tonumber(ARGV[2]), ARGV[3])
local k = 5
for i = 4, #ARGV do
  local m = ARGV[i]
  local members = nil
  if string.sub(m, 1, 2) == 't:' then
    members = KEYS[k]
    k = k + 1
  end
  local score = redis.call('ZSCORE', KEYS[1], m)
  if score and tonumber(score) + grace <= now then
    redis.call('ZREM', KEYS[1], m)
    local rest = string.sub(m, 3)
    if members then
      if redis.call('ZCARD', members) == 0 and redis.call('SREM', KEYS[2], m) == 1 then
        ev.emit('topic.vacated', 'topic', rest, score)
      end
    elseif not redis.call('HGET', KEYS[3], rest) and redis.call('SREM', KEYS[2], m) == 1 then
      ev.emit('user.offline', 'user_id', rest, score)
    end
  end
end
return ev.dropped
