-- expire(epoch, limit) -> {'OK', ended client ids, retained topics expired} | {'FENCED'}
-- Ends at most `limit` offline sessions whose Session Expiry passed [MQTT-3.1.2-23] (a pending will
-- of theirs is already due: it waits at most the session expiry) and drops at most `limit` retained
-- messages whose Message Expiry passed.
local epoch, limit = ARGV[2], tonumber(ARGV[3])
if not live(epoch) then return {'FENCED'} end
local ended = {}
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'sessdue', '-inf', NOW, 'LIMIT', 0, limit)) do
  local owner = redis.call('HGET', P .. 'sess:' .. cid, 'owner')
  if owner == '0' then
    end_session(cid)
    ended[#ended + 1] = cid
  else
    redis.call('ZREM', P .. 'sessdue', cid)  -- online again, or gone
  end
end
local topics = redis.call('ZRANGEBYSCORE', P .. 'retexp', '-inf', NOW, 'LIMIT', 0, limit)
for _, t in ipairs(topics) do set_retained(t, nil, nil) end
return {'OK', ended, topics}
