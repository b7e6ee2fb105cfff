-- ack(epoch, n, n x (client id, gen, entry id)) -> {'OK', acknowledged, refused} | {'FENCED'}
-- The deliveries are done (PUBACK, PUBCOMP, or QoS 0 sent): their queue entries go, and with them
-- one reference each to their message (deleted with its last). Entries of sessions this epoch does
-- not own at this generation are refused (the session moved on: its new owner delivers them).
local epoch, n = ARGV[2], tonumber(ARGV[3])
if not live(epoch) then return {'FENCED'} end
local acked, refused = 0, 0
local i = 4
for _ = 1, n do
  local cid, gen, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local s = redis.call('HMGET', P .. 'sess:' .. cid, 'owner', 'gen')
  if s[1] ~= epoch or s[2] ~= gen then
    refused = refused + 1
  else
    local q = P .. 'q:' .. cid
    local e = redis.call('XRANGE', q, id, id)
    if #e == 1 then
      local f = e[1][2]
      redis.call('XDEL', q, id)
      redis.call('HDEL', P .. 'qst:' .. cid, id)
      for j = 1, #f, 2 do if f[j] == 'm' then unref(f[j + 1]) end end
      acked = acked + 1
    end
  end
end
return {'OK', acked, refused}
