-- Append one task.output event per chunk given after token, in order, and keep the
-- chunks with the task (as output.lua does for one), unless the task is unknown or
-- terminal: then nothing. Returns the chunks' event ids; a retried write (same token)
-- returns the rows it stored, each starting with its event id.
-- KEYS: epoch events task output
-- ARGV: history token ...
-- include: terminal
local current = redis.call('HMGET', task, 's', 'd', 'o')
if not current[1] then return false end
local count = #ARGV - 2
if current[3] == token then return redis.call('LRANGE', output, -count, -1) end  -- a retried write
if TERMINAL[current[1]] then return false end
local history_epoch = redis.call('GET', epoch)
if not history_epoch then return false end  -- flushed: the task is gone too
local ids = {}
for i = 3, #ARGV do
  local chunk = ARGV[i]
  local sid = redis.call('XADD', events, 'MAXLEN', '~', history, '*', 'e', history_epoch,
    't', 'task.output', 'd', current[2], 'c', chunk)
  local event_id = history_epoch .. '-' .. sid
  redis.call('RPUSH', output, event_id .. ' ' .. chunk)
  ids[i - 2] = event_id
end
redis.call('HSET', task, 'o', token)
return ids
