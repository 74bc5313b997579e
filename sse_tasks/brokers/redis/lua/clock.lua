-- Redis's own clock in ms (TIME), so hosts with skewed clocks agree on leases.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
