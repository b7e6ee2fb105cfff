-- mark(epoch, n, n x (client id, gen, entry id, packet id, state)) -> {'OK', marked} | {'FENCED'}
-- A QoS 2 delivery of a queue entry was sent to the client under this packet id (state 'pubrec':
-- PUBLISH sent; 'pubcomp': PUBREC received, PUBREL sent). Kept with the entry (qst:<cid>) until it is
-- acknowledged, so that the session's next holder (after a node death, or a reconnect) sends it again
-- with the same packet id and DUP 1, or the PUBREL [MQTT-4.4.0-1]: the client's QoS 2 receiver state
-- then does not deliver it twice [MQTT-4.3.3-10]. Marks of sessions this epoch does not hold at this
-- generation, or of entries already acknowledged, are not kept.
local epoch, n = ARGV[2], tonumber(ARGV[3])
if not live(epoch) then return {'FENCED'} end
local marked = 0
local i = 4
for _ = 1, n do
  local cid, gen, id, pid, state = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local s = redis.call('HMGET', P .. 'sess:' .. cid, 'owner', 'gen')
  if s[1] == epoch and s[2] == gen and #redis.call('XRANGE', P .. 'q:' .. cid, id, id) == 1 then
    redis.call('HSET', P .. 'qst:' .. cid, id, pid .. ' ' .. state)
    marked = marked + 1
  end
end
return {'OK', marked}
