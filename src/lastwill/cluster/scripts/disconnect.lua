-- disconnect(epoch, client id, gen, normal, session expiry or '', cause)
--   -> {'OK', will gen or '', outcome, due ms or '', session ended} | {'FENCED'} | {'NOT_OWNER'}
--   outcome: 'none' (no will), 'cancelled' (DISCONNECT 0x00 [MQTT-3.14.4-3]), 'deferred' (due later),
--            'due' (due now: min(Will Delay, Session Expiry) is 0 [MQTT-3.1.2-8])
-- Only the connection that holds the session (this epoch, this generation) can end it: after a
-- takeover the old connection's disconnect writes nothing (NOT_OWNER).
-- The session expiry is the final one (a DISCONNECT may change it); 0 ends the session now (a
-- pending will stays in 'due' and goes out).
local epoch, cid, gen, normal, nexp, cause = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if not live(epoch) then return {'FENCED'} end
local sk = P .. 'sess:' .. cid
local s = redis.call('HMGET', sk, 'owner', 'gen', 'expiry', 'will')
if s[1] ~= epoch or s[2] ~= gen then return {'NOT_OWNER'} end
local expiry = tonumber(s[3])
if nexp ~= '' then expiry = tonumber(nexp) end

local g, outcome, due = '', 'none', ''
if s[4] then
  g = s[4]
  local w = P .. 'will:' .. g
  if normal == '1' then
    redis.call('DEL', w)  -- [MQTT-3.14.4-3] removed without publishing
    outcome = 'cancelled'
  else
    local delay = tonumber(redis.call('HGET', w, 'delay'))
    due = NOW + will_wait_ms(delay, expiry, 0)  -- [MQTT-3.1.3-9]
    redis.call('ZADD', P .. 'due', due, g)
    redis.call('HSET', w, 'due_ms', due, 'ended_ms', NOW, 'cause', cause)
    redis.call('HSET', sk, 'pwill', g)
    if due <= NOW then outcome = 'due' else outcome = 'deferred' end
  end
  redis.call('HDEL', sk, 'will')
end
redis.call('HSET', sk, 'owner', 0, 'disc_ms', NOW, 'expiry', expiry, 'node', '')
redis.call('SREM', P .. 'owned:' .. epoch, cid)
local ended = 0
if expiry == 0 then
  end_session(cid)  -- [MQTT-3.1.2-23]
  ended = 1
elseif expiry ~= NEVER then
  redis.call('ZADD', P .. 'sessdue', NOW + expiry * 1000, cid)
end
return {'OK', g, outcome, due, ended}
