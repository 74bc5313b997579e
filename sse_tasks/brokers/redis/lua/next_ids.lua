-- next_ids(n, ms): n new event ids, after every id given so far. One id space (the key
-- `last`) numbers the log and every task's output stream, so all of a history's events
-- are totally ordered by id though they live in different keys. From Redis's clock,
-- as XADD's own ids are: ms, the script's `now` (clock), if it read it already.
local function next_ids(n, ms)
  if not ms then
    local clock = redis.call('TIME')
    ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  end
  local seq = 0
  local previous = redis.call('GET', last)
  if not previous and redis.call('EXISTS', events) == 1 then
    -- `last` lost (evicted, deleted): continue a millisecond after both the clock and
    -- the log's newest id (output ids given since are at most the clock's)
    local info = redis.call('XINFO', 'STREAM', events)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then previous = info[i + 1] end
    end
    local dash = string.find(previous, '-', 1, true)
    ms = math.max(ms, tonumber(string.sub(previous, 1, dash - 1))) + 1
    previous = nil
  end
  if previous then
    local dash = string.find(previous, '-', 1, true)
    local last_ms, last_seq = tonumber(string.sub(previous, 1, dash - 1)), tonumber(string.sub(previous, dash + 1))
    if ms <= last_ms then ms, seq = last_ms, last_seq + 1 end
  end
  local ids = {}
  for i = 1, n do
    ids[i] = string.format('%.0f-%.0f', ms, seq + i - 1)
  end
  redis.call('SET', last, ids[n])
  return ids
end
