-- reap(epoch, grace_ms, recovery_grace_ms, batch) ->
--   {'OK', fenced, reaped, finished, remaining} | {'FENCED'}
--   fenced:   flat list of (epoch, node id, lease end) of the epochs fenced by this call
--   reaped:   flat list of (client id, dead epoch, will gen or '', will due ms or '') of this batch
--   finished: epochs whose reap ended in this call; remaining: epochs still being reaped
--
-- 1. Every epoch whose lease ended more than grace_ms ago is fenced: removed from the live set and
--    put in 'reaping' with its lease end. (Its scripts already failed since its lease ended.)
-- 2. At most `batch` sessions of reaping epochs are made offline: disconnected at the lease end, the
--    armed will due at lease_end + max(recovery grace, min(Will Delay, Session Expiry)) (MQTT 3.1.1
--    wills have delay 0: lease_end + recovery grace), the session expiring at
--    lease_end + max(Session Expiry, recovery grace), a session of expiry 0 without a will ended.
-- Each call is atomic; the work left is in 'reaping' and 'owned:<dead>', so when a reaper dies
-- between calls any other live node continues where it stopped.
local epoch, grace_ms, rgrace_ms, batch = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not live(epoch) then return {'FENCED'} end

local fenced = {}
local lapsed = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', '(' .. (NOW - grace_ms), 'WITHSCORES',
                          'LIMIT', 0, 100)
for i = 1, #lapsed, 2 do
  local d, lease_end = lapsed[i], lapsed[i + 1]
  redis.call('ZREM', P .. 'nodes', d)
  redis.call('ZADD', P .. 'reaping', lease_end, d)
  redis.call('HSET', P .. 'node:' .. d, 'state', 'fenced', 'fenced_ms', NOW, 'fenced_by', epoch,
             'lease_end', lease_end)
  fenced[#fenced + 1] = d
  fenced[#fenced + 1] = redis.call('HGET', P .. 'node:' .. d, 'nid') or ''
  fenced[#fenced + 1] = lease_end
end

local reaped, finished = {}, {}
local budget = batch
local dead = redis.call('ZRANGE', P .. 'reaping', 0, -1, 'WITHSCORES')
for i = 1, #dead, 2 do
  if budget <= 0 then break end
  local d, lease_end = dead[i], tonumber(dead[i + 1])
  local nid = redis.call('HGET', P .. 'node:' .. d, 'nid') or ''
  local cids = redis.call('SPOP', P .. 'owned:' .. d, budget)
  for _, cid in ipairs(cids) do
    budget = budget - 1
    local sk = P .. 'sess:' .. cid
    local s = redis.call('HMGET', sk, 'owner', 'expiry', 'will')
    if s[1] == d then  -- (a session that moved on is no longer in owned:<d>; checked all the same)
      local expiry = tonumber(s[2])
      local g, due = '', ''
      if s[3] then
        g = s[3]
        local w = P .. 'will:' .. g
        local delay = tonumber(redis.call('HGET', w, 'delay'))
        due = lease_end + will_wait_ms(delay, expiry, rgrace_ms)
        redis.call('ZADD', P .. 'due', due, g)
        redis.call('HSET', w, 'due_ms', due, 'ended_ms', lease_end, 'cause', 'node_died', 'dead_epoch', d,
                   'dead_node', nid)
        redis.call('HDEL', sk, 'will')
        redis.call('HSET', sk, 'pwill', g)
      end
      redis.call('HSET', sk, 'owner', 0, 'disc_ms', lease_end, 'node', '')
      if expiry == 0 and g == '' then
        end_session(cid)
      elseif expiry ~= NEVER then
        redis.call('ZADD', P .. 'sessdue', lease_end + math.max(expiry * 1000, rgrace_ms), cid)
      end
      reaped[#reaped + 1] = cid
      reaped[#reaped + 1] = d
      reaped[#reaped + 1] = g
      reaped[#reaped + 1] = due
    end
  end
  if redis.call('SCARD', P .. 'owned:' .. d) == 0 then
    redis.call('ZREM', P .. 'reaping', d)
    redis.call('HSET', P .. 'node:' .. d, 'state', 'reaped', 'reaped_ms', NOW)
    finished[#finished + 1] = d
  end
end
return {'OK', fenced, reaped, finished, redis.call('ZCARD', P .. 'reaping')}
