-- retained(0, n, n x topic) -> {'OK', flat (topic, message id, payload, qos, props, origin, expires
--   ms or '')}: the retained messages of these topics, or of every topic when n is 0. Read only;
--   expired ones are left out (expire() drops them).
local n = tonumber(ARGV[3])
local topics
if n == 0 then
  topics = redis.call('HKEYS', P .. 'ret')
else
  topics = {}
  for j = 1, n do topics[j] = ARGV[3 + j] end
end
local out = {}
for _, t in ipairs(topics) do
  local id = redis.call('HGET', P .. 'ret', t)
  if id then
    local m = redis.call('HMGET', P .. 'msg:' .. id, 'payload', 'qos', 'props', 'origin', 'exp')
    if m[1] and (m[5] == '' or tonumber(m[5]) > NOW) then
      out[#out + 1] = t; out[#out + 1] = id; out[#out + 1] = m[1]; out[#out + 1] = m[2]
      out[#out + 1] = m[3]; out[#out + 1] = m[4]; out[#out + 1] = m[5]
    end
  end
end
return {'OK', out}
