-- heartbeat(epoch, lease_ms) -> {'OK', lease_until} | {'FENCED'}
-- Renews a lease that has not ended. A lapsed lease is not renewed: the node is fenced and must
-- register again (a new epoch).
local epoch, lease_ms = ARGV[2], tonumber(ARGV[3])
if not live(epoch) then return {'FENCED'} end
local lease_until = NOW + lease_ms
redis.call('ZADD', P .. 'nodes', 'XX', lease_until, epoch)
redis.call('HSET', P .. 'node:' .. epoch, 'lease_until', lease_until)
return {'OK', lease_until}
