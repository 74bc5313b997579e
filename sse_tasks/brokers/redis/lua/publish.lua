-- Store a task's snapshot and append its event, as one compare-and-set: a task that
-- is terminal never changes again; only task.queued may create one, and requeue=1 lets
-- it return an unfinished task to queued (a retry on another engine's workers);
-- created (a queued snapshot's JSON, or '') lets any event create the task, its
-- task.queued event first (a worker that starts a task nobody stored). An id the hub
-- refused (it answered 503: refuse.lua) is never created.
-- started (a running snapshot's JSON, or '') appends its task.running event first: a
-- worker stores a short task's start with its outcome in one call.
-- lease: 'add' starts (or pushes) the task's lease, 'xx' pushes it only if it has one,
-- 'none' leaves the task unleased (it waits in another engine's durable queue).
-- KEYS: epoch last events task tasks seq finished expired leases output refused
-- ARGV: id type state name data terminal new_epoch history retention_ms max_tasks lease_ms lease requeue created token lapsed_only prefix started
-- include: clock
-- include: terminal
-- include: task_keys
-- include: next_ids
local current = redis.call('HMGET', task, 's', 'n', 'i')
if current[1] then
  if current[2] == token then return {current[3], 1} end  -- a retried write already stored
  if TERMINAL[current[1]] then return false end
  if type == 'task.queued' and requeue ~= '1' then return false end
else
  if redis.call('EXISTS', refused) == 1 then return false end
  -- created: not for a task that expired (its worker is late; the client got 410)
  if type ~= 'task.queued' and (created == '' or redis.call('ZSCORE', expired, id)) then
    return false
  end
end
if lapsed_only == '1' then
  local deadline = redis.call('ZSCORE', leases, id)
  if not deadline or tonumber(deadline) > now then return false end
end
local history_epoch = redis.call('GET', epoch)
if not history_epoch then
  history_epoch = new_epoch
  redis.call('SET', epoch, history_epoch)
end
local appended = {}
if not current[1] then
  -- Created by its first event: task.queued first (a retry's start too, before it).
  if type ~= 'task.queued' or (started ~= '' and created ~= '') then appended[1] = {'task.queued', created} end
  -- A start without the snapshot to create the task from is refused, as on its own.
  if created == '' then started = '' end
end
if started ~= '' then appended[#appended + 1] = {'task.running', started} end
appended[#appended + 1] = {type, data}
local ids = next_ids(#appended, now)
local sid
for i, event in ipairs(appended) do
  sid = redis.call('XADD', events, 'MAXLEN', '~', history, ids[i], 'e', history_epoch, 't', event[1], 'k', id, 'd', event[2])
end
local event_id = history_epoch .. '-' .. sid
redis.call('HSET', task, 's', state, 'm', name, 'd', data, 'i', event_id, 't', type, 'n', token)
local retention = tonumber(retention_ms)
if not current[1] then
  redis.call('ZADD', tasks, redis.call('INCR', seq), id)
end
if terminal == '1' then
  redis.call('ZREM', leases, id)
  -- By the final event's id, not the clock alone: tasks finished within one millisecond
  -- keep their order (max_tasks expires the oldest), to 1,024 a millisecond.
  local dash = string.find(sid, '-', 1, true)
  local finished_at = tonumber(string.sub(sid, 1, dash - 1)) + math.min(tonumber(string.sub(sid, dash + 1)), 1023) / 1024
  redis.call('ZADD', finished, string.format('%.17g', finished_at), id)
  redis.call('PEXPIRE', task, retention)
  redis.call('PEXPIRE', output, retention)
  local gone = redis.call('ZRANGEBYSCORE', finished, '-inf', now - retention, 'LIMIT', 0, 100)
  local over = redis.call('ZCARD', finished) - tonumber(max_tasks)
  if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', finished, 0, over - 1)) do
      table.insert(gone, old)
    end
  end
  for _, old in ipairs(gone) do
    redis.call('DEL', task_key(old), output_key(old))
    redis.call('ZREM', tasks, old)
    redis.call('ZREM', finished, old)
    redis.call('ZADD', expired, now, old)
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYRANK', expired, 0, -(tonumber(max_tasks) + 1))
  end
elseif lease == 'none' then
  redis.call('ZREM', leases, id)
elseif lease == 'add' then
  redis.call('ZADD', leases, now + tonumber(lease_ms), id)
else
  redis.call('ZADD', leases, 'XX', now + tonumber(lease_ms), id)
end
return {event_id, 0}
