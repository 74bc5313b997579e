-- Append a task.output event and keep its chunk with the task, unless the task is
-- unknown or terminal. The stream entry carries the stored snapshot too (``d``), so
-- every process can filter the event as it filters the task's other events.
-- KEYS: epoch events task output
-- ARGV: chunk history token
-- include: terminal
local current = redis.call('HMGET', task, 's', 'd', 'o')
if not current[1] then return false end
if current[3] == token then return {redis.call('LINDEX', output, -1), 1} end  -- a retried write
if TERMINAL[current[1]] then return false end
local history_epoch = redis.call('GET', epoch)
if not history_epoch then return false end  -- flushed: the task is gone too
local sid = redis.call('XADD', events, 'MAXLEN', '~', history, '*', 'e', history_epoch,
  't', 'task.output', 'd', current[2], 'c', chunk)
local event_id = history_epoch .. '-' .. sid
redis.call('RPUSH', output, event_id .. ' ' .. chunk)
redis.call('HSET', task, 'o', token)
return {event_id, 0}
