-- Append one task.output event per chunk given after token, in order, to the task's
-- output stream (as output.lua does for one), unless the task is unknown or terminal:
-- then nothing. Returns the chunks' event ids (a retried write, same token: the ids it
-- stored).
-- KEYS: epoch last events task output
-- ARGV: token ...
-- include: terminal
-- include: next_ids
local current = redis.call('HMGET', task, 's', 'o')
if not current[1] then return false end
local count = #ARGV - 1
local history_epoch = redis.call('GET', epoch)
if not history_epoch then return false end  -- flushed: the task is gone too
local event_ids = {}
if current[2] == token then  -- a retried write
  local stored = redis.call('XREVRANGE', output, '+', '-', 'COUNT', count)
  for i = 1, #stored do event_ids[#stored - i + 1] = history_epoch .. '-' .. stored[i][1] end
  return event_ids
end
if TERMINAL[current[1]] then return false end
local ids = next_ids(count)
for i = 1, count do
  redis.call('XADD', output, ids[i], 'c', ARGV[i + 1])
  event_ids[i] = history_epoch .. '-' .. ids[i]
end
redis.call('HSET', task, 'o', token)
return event_ids
