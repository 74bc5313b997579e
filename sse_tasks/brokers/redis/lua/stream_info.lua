-- head: the last event id given (`last`; the log's own newest if that is lost).
-- intact: 1 if nothing after id `after` was trimmed from the log: every id Redis ever
-- deleted from it (XINFO's max-deleted-entry-id) is at most `after`. (`after` may be
-- the id of an output event, which is not in the log itself.)
local function id_parts(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local head, intact = redis.call('GET', last) or '0-0', 1
if redis.call('EXISTS', events) == 1 then
  local info = redis.call('XINFO', 'STREAM', events)
  local deleted = '0-0'
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and head == '0-0' then head = info[i + 1] end
    if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
  end
  local deleted_ms, deleted_seq = id_parts(deleted)
  local after_ms, after_seq = id_parts(after)
  if deleted_ms > after_ms or (deleted_ms == after_ms and deleted_seq > after_seq) then intact = 0 end
elseif after ~= '0-0' and redis.call('EXISTS', last) == 0 then
  intact = 0
end
