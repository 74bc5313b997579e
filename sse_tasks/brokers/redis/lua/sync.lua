-- The history's epoch (made from new_epoch if there is none yet), the stream's head,
-- and whether anything after the reader's position was trimmed.
-- KEYS: epoch last events
-- ARGV: new_epoch after
local history_epoch = redis.call('GET', epoch)
if not history_epoch then
  history_epoch = new_epoch
  redis.call('SET', epoch, history_epoch)
end
-- include: stream_info
return {history_epoch, head, intact}
