-- Push the lease deadline of each task id given after lease_ms (only ids still leased).
-- KEYS: leases
-- ARGV: lease_ms ...
-- include: clock
for i = 2, #ARGV do
  redis.call('ZADD', leases, 'XX', now + tonumber(lease_ms), ARGV[i])
end
return #ARGV - 1
