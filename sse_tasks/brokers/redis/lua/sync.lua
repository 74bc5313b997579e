-- The history's epoch (made from new_epoch if there is none yet), the stream's head,
-- and whether anything after the reader's position was trimmed (0) or lost (2: the last
-- log entry it read, `seen`, is gone though nothing was trimmed past it: the history
-- went back, and writes since may have taken `last` past the lost ids).
-- KEYS: epoch last events
-- ARGV: new_epoch after seen
local history_epoch = redis.call('GET', epoch)
if not history_epoch then
  history_epoch = new_epoch
  redis.call('SET', epoch, history_epoch)
end
-- include: stream_info
if intact == 1 and seen ~= '0-0' and #redis.call('XRANGE', events, seen, seen) == 0 then intact = 2 end
return {history_epoch, head, intact}
