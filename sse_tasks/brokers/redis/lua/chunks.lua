-- A task's stored output: the history's epoch and the entries of its output stream
-- (each id an event id within that history).
-- KEYS: epoch output
-- ARGV:
return {redis.call('GET', epoch) or '', redis.call('XRANGE', output, '-', '+')}
