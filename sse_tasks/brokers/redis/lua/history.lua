-- Stream entries after `after` (exclusive) up to `up_to` (inclusive), with the epoch
-- and whether the history still reaches back to `after`.
-- KEYS: epoch last events
-- ARGV: up_to after count
-- include: stream_info
local entries = redis.call('XRANGE', events, '(' .. after, up_to, 'COUNT', count)
return {redis.call('GET', epoch) or '', intact, entries}
