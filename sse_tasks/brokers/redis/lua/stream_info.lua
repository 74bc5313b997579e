-- head: the stream's last id. intact: 1 if nothing after stream id `after` was trimmed.
-- Trimming removes the oldest entries, so that holds while the entry itself is still
-- there (or, for 0-0, while nothing was ever trimmed). An id that is gone may have
-- been trimmed.
local head, intact = '0-0', 1
if redis.call('EXISTS', events) == 1 then
  local info = redis.call('XINFO', 'STREAM', events)
  local length, added = 0, -1
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then head = info[i + 1] end
    if info[i] == 'length' then length = info[i + 1] end
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
  if after == '0-0' then
    if added ~= length then intact = 0 end
  elseif #redis.call('XRANGE', events, after, after) == 0 then
    intact = 0
  end
elseif after ~= '0-0' then
  intact = 0
end
