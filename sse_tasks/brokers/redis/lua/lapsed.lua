-- Up to `limit` task ids whose lease deadline has passed.
-- KEYS: leases
-- ARGV: limit
-- include: clock
return redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, tonumber(limit))
