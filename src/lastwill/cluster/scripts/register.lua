-- register(node_id, addr, lease_ms) -> {epoch, lease_until, replaced epoch or 0}
-- A node incarnation gets a new epoch (INCR: never reused) and a lease. A live epoch registered
-- earlier under the same node id is a dead incarnation of this node (it restarted before its lease
-- ended): it is fenced now, its lease counted as ended now, and reaped like any dead node.
local nid, addr, lease_ms = ARGV[3], ARGV[4], tonumber(ARGV[5])
local epoch = redis.call('INCR', P .. 'epoch')
local replaced = 0
local prev = redis.call('HGET', P .. 'nodeid', nid)
if prev and live(prev) then
  redis.call('ZREM', P .. 'nodes', prev)
  redis.call('ZADD', P .. 'reaping', NOW, prev)
  redis.call('HSET', P .. 'node:' .. prev, 'state', 'fenced', 'fenced_ms', NOW, 'fenced_by', epoch,
             'lease_end', NOW)
  replaced = tonumber(prev)
end
local lease_until = NOW + lease_ms
redis.call('ZADD', P .. 'nodes', lease_until, epoch)
redis.call('HSET', P .. 'nodeid', nid, epoch)
redis.call('HSET', P .. 'node:' .. epoch, 'nid', nid, 'addr', addr, 'registered_ms', NOW,
           'lease_until', lease_until, 'state', 'live')
return {epoch, lease_until, replaced}
