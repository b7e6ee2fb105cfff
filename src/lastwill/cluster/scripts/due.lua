-- due(epoch, limit, offset) -> {'OK', now, next due ms or '', items} | {'FENCED'}
--   items: per will due by now, {gen, client id, due ms, topic, qos, retain, user, cause, dead node,
--          dead epoch, ended ms}: what a node needs to route it (and to check the ACL) before fire()
-- Read only. Several claimants spread over the due set by asking from different offsets (a claimant
-- that asks past the end gets the first ones).
local epoch, limit, offset = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not live(epoch) then return {'FENCED'} end
local gens = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', NOW, 'WITHSCORES', 'LIMIT', offset, limit)
if #gens == 0 and offset > 0 then
  gens = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, limit)
end
local items = {}
for i = 1, #gens, 2 do
  local f = redis.call('HMGET', P .. 'will:' .. gens[i], 'cid', 'topic', 'qos', 'retain', 'user', 'cause',
                       'dead_node', 'dead_epoch', 'ended_ms')
  if f[1] then
    items[#items + 1] = {gens[i], f[1], gens[i + 1], f[2], f[3], f[4], f[5] or '', f[6] or '', f[7] or '',
                         f[8] or '', f[9] or ''}
  end
end
local nxt = redis.call('ZRANGE', P .. 'due', 0, 0, 'WITHSCORES')
return {'OK', NOW, nxt[2] or '', items}
