-- publish(epoch, routever, n, n x (topic, payload, qos, retain, props, origin, message expiry s or '',
--         k, k x target)) -> {'OK', message ids} | {'FENCED'} | {'STALE', current routever}
-- A batch of PUBLISHes (one event-loop turn of a node): each message stored once (when somebody
-- gets it or it is retained), a reference queued in the stream of each target session (QoS 1/2,
-- and anything for a persistent session), the retained message set or cleared, doorbells rung once
-- per owning node. Targets come from the caller's replica at version routever.
local epoch, routever, n = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not live(epoch) then return {'FENCED'} end
local cur = redis.call('GET', P .. 'routever') or '0'
if cur ~= routever then return {'STALE', tonumber(cur)} end
local ids = {}
local i = 5
for _ = 1, n do
  local exp = nil
  if ARGV[i + 6] ~= '' then exp = NOW + tonumber(ARGV[i + 6]) * 1000 end
  local id
  id, i = store_and_queue(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], exp, '0',
                          i + 7)
  ids[#ids + 1] = id
end
ring_bells()
return {'OK', ids}
