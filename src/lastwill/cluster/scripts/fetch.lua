-- fetch(epoch, n, n x (client id, gen, after entry id or '', count)) -> {'OK', per session
--   {'OK' | 'NOT_OWNER', entries}} | {'FENCED'}
--   entry: {entry id, message id, topic, payload, delivery qos, retain flag, subscription ids, props,
--           origin, expires ms or '', is will, 'packet id state' of a QoS 2 delivery sent (mark) or ''}
-- The queued messages of sessions this epoch owns (this generation), after an entry id. Messages
-- whose Message Expiry passed are dropped from the queue, not returned [MQTT-3.3.2-5], unless a QoS 2
-- delivery of them was sent already [MQTT-4.3.3-7].
local epoch, n = ARGV[2], tonumber(ARGV[3])
if not live(epoch) then return {'FENCED'} end
local out = {}
local i = 4
for _ = 1, n do
  local cid, gen, after, count = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local s = redis.call('HMGET', P .. 'sess:' .. cid, 'owner', 'gen')
  if s[1] ~= epoch or s[2] ~= gen then
    out[#out + 1] = {'NOT_OWNER', {}}
  else
    local q = P .. 'q:' .. cid
    local start = '-'
    if after ~= '' then start = '(' .. after end
    local entries = redis.call('XRANGE', q, start, '+', 'COUNT', count)
    local got = {}
    local marks = P .. 'qst:' .. cid
    for _, e in ipairs(entries) do
      local f = {}
      for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
      local m = redis.call('HMGET', P .. 'msg:' .. f['m'], 'topic', 'payload', 'props', 'origin', 'exp', 'will')
      local mark = redis.call('HGET', marks, e[1]) or ''
      -- (a QoS 2 delivery already sent does not expire [MQTT-4.3.3-7])
      if not m[1] or (mark == '' and m[5] ~= '' and tonumber(m[5]) <= NOW) then
        redis.call('XDEL', q, e[1])
        redis.call('HDEL', marks, e[1])
        if m[1] then unref(f['m']) end
      else
        got[#got + 1] = {e[1], f['m'], m[1], m[2], f['q'], f['r'], f['s'], m[3], m[4], m[5], m[6], mark}
      end
    end
    out[#out + 1] = {'OK', got}
  end
end
return {'OK', out}
