-- Append one task.output event to the task's own output stream (not the shared log:
-- a process reads it only while a client there follows the task's output), unless the
-- task is unknown or terminal. Returns {event id, retried}.
-- KEYS: epoch last events task output
-- ARGV: chunk token
-- include: terminal
-- include: next_ids
local current = redis.call('HMGET', task, 's', 'o')
if not current[1] then return false end
local history_epoch = redis.call('GET', epoch)
if not history_epoch then return false end  -- flushed: the task is gone too
if current[2] == token then  -- a retried write
  local stored = redis.call('XREVRANGE', output, '+', '-', 'COUNT', 1)
  if not stored[1] then return false end
  return {history_epoch .. '-' .. stored[1][1], 1}
end
if TERMINAL[current[1]] then return false end
local id = next_ids(1)[1]
redis.call('XADD', output, id, 'c', chunk)
redis.call('HSET', task, 'o', token)
return {history_epoch .. '-' .. id, 0}
