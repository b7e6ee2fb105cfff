-- subscribe(epoch, client id, gen, n, n x (filter, options), m, m x filter)
--   -> {'OK', routever, existed flags of the m filters removed} | {'FENCED'} | {'NOT_OWNER'}
-- Adds or replaces n subscriptions and removes m of the session (shared ones as '$share/g/f'), each
-- change logged in 'routelog' under the next routever, so every replica applies them in order.
local epoch, cid, gen, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not live(epoch) then return {'FENCED'} end
local s = redis.call('HMGET', P .. 'sess:' .. cid, 'owner', 'gen')
if s[1] ~= epoch or s[2] ~= gen then return {'NOT_OWNER'} end
local i = 6
for _ = 1, n do
  local f, o = ARGV[i], ARGV[i + 1]
  redis.call('HSET', P .. 'subs:' .. cid, f, o)
  redis.call('HSET', P .. 'routes', cid .. '\0' .. f, o)
  route_change('s', cid, f, o)
  i = i + 2
end
local m = tonumber(ARGV[i])
local existed = {}
for j = 1, m do
  local f = ARGV[i + j]
  if redis.call('HDEL', P .. 'subs:' .. cid, f) == 1 then
    redis.call('HDEL', P .. 'routes', cid .. '\0' .. f)
    route_change('u', cid, f, '')
    existed[#existed + 1] = 1
  else
    existed[#existed + 1] = 0
  end
end
local ver = tonumber(redis.call('GET', P .. 'routever') or '0')
-- a hint to every node that its replica is behind (it also catches up on a timer and on STALE)
if n + m > 0 then redis.call('PUBLISH', P .. 'routes', ver) end
return {'OK', ver, existed}
