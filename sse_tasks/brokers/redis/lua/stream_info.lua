-- head: the last event id given (`last`; the log's own newest if that is lost).
-- intact: 1 if nothing after id `after` was trimmed from the log; 2 if the history went
-- back before `after` (a failover to a replica that had not received the latest writes,
-- or a restart from an older snapshot: `after` was given, the last id given is older;
-- sync.lua also checks the last log entry read). Trimming takes the
-- oldest entries, so that holds while nothing was ever trimmed, or while the oldest
-- entry left is at most `after` (`after` may be an output event's id, which is not
-- in the log itself: if it falls just before the oldest entry, the answer is 0).
local function before(a, b)  -- id a < id b
  local a_dash, b_dash = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local a_ms, b_ms = tonumber(string.sub(a, 1, a_dash - 1)), tonumber(string.sub(b, 1, b_dash - 1))
  if a_ms ~= b_ms then return a_ms < b_ms end
  return tonumber(string.sub(a, a_dash + 1)) < tonumber(string.sub(b, b_dash + 1))
end
local given = redis.call('GET', last)
local head, intact = given or '0-0', 1
if redis.call('EXISTS', events) == 1 then
  local info = redis.call('XINFO', 'STREAM', events)
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  if head == '0-0' then head = fields['last-generated-id'] end
  if fields['entries-added'] ~= fields['length'] then
    local first = fields['first-entry']
    local oldest = first and first[1] or fields['last-generated-id']
    if before(after, oldest) then intact = 0 end
  end
elseif after ~= '0-0' then
  intact = 0
end
-- (Only from `last` itself: the log's own newest, when `last` is lost, may be older than
-- an output id, which only `last` counts.)
if given and after ~= '0-0' and before(head, after) then intact = 2 end
