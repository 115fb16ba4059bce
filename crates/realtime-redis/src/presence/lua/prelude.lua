-- Shared by the presence scripts (prepended to each): the one clock (Redis's
-- TIME, in ms) and queuing an event on the bounded stream.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ms(n)
  return string.format('%d', n)
end

-- Events go on the stream while it holds fewer than `cap`; past that they are
-- counted as dropped. Ids are the call's random base and a counter.
local function emitter(stream, cap, base)
  local e = { n = 0, dropped = 0 }
  function e.emit(kind, field, value, ts)
    if redis.call('XLEN', stream) >= cap then
      e.dropped = e.dropped + 1
      return
    end
    e.n = e.n + 1
    redis.call('XADD', stream, '*', 'id', base .. '-' .. e.n, 'type', kind,
      'ts', ms(tonumber(ts)), field, value)
  end
  return e
end
