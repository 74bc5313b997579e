-- The hub could not hand a task to its engine and answers 503: refuse the id for good
-- (publish.lua never creates it; a worker that receives its message late discards it),
-- unless the task is already stored (a worker took it: the message left after all, and
-- the work is under way). Returns 1 if refused, 0 if the task is stored (or ran and expired).
-- KEYS: task expired refused
-- ARGV: id ttl_ms
if redis.call('EXISTS', task) == 1 or redis.call('ZSCORE', expired, id) then return 0 end
redis.call('SET', refused, '1', 'PX', ttl_ms)
return 1
