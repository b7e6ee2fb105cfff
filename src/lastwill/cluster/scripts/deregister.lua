-- deregister(epoch) -> {'OK', sessions still owned} | {'FENCED'}
-- A node that shuts down cleanly ends its lease now; its remaining sessions are reaped like a dead
-- node's (with the lease end = now), so nothing it held is forgotten.
local epoch = ARGV[2]
if not live(epoch) then return {'FENCED'} end
redis.call('ZREM', P .. 'nodes', epoch)
redis.call('ZADD', P .. 'reaping', NOW, epoch)
redis.call('HSET', P .. 'node:' .. epoch, 'state', 'fenced', 'fenced_ms', NOW, 'fenced_by', epoch,
           'lease_end', NOW)
return {'OK', redis.call('SCARD', P .. 'owned:' .. epoch)}
