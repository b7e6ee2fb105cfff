-- fire(epoch, node id, routever, n, n x (gen, client id, mode, k, k x target)) -> {'OK', results}
--   | {'FENCED'} | {'STALE', current routever}
--   mode: 'p' publish, 'd' the ACL denied it (removed and recorded, not published)
--   target: (client id, delivery qos, retain flag, subscription ids), computed by the caller from
--           its replica of the subscription table at version routever
--   results: per item {status, due ms, receivers, audit record id}; status 'FIRED', 'DENIED',
--            'GONE' (no such will in 'due': another node fired it, or the client came back and
--            cancelled it) or 'NOT_DUE' (its deadline is later than now)
-- The claim: in one atomic step the will leaves 'due' and its hash [MQTT-3.1.2-10], is stored once
-- and queued to every target, becomes the retained message when Will Retain is set, and an audit
-- record goes to the 'fired' stream. A second claimant finds nothing: GONE. Nothing is written when
-- the caller is fenced or routed on a table that changed since (STALE: catch up, then retry).
local epoch, nid, routever, n = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not live(epoch) then return {'FENCED'} end
local cur = redis.call('GET', P .. 'routever') or '0'
if cur ~= routever then return {'STALE', tonumber(cur)} end

local results = {}
local i = 6
for _ = 1, n do
  local g, cid, mode, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local ti = i + 3
  local nexti = i + 4 + k * 4
  local w = P .. 'will:' .. g
  local due = redis.call('ZSCORE', P .. 'due', g)
  local f = redis.call('HMGET', w, 'cid', 'topic', 'payload', 'qos', 'retain', 'props', 'mexp', 'cause',
                       'dead_node', 'dead_epoch', 'ended_ms')
  if not due or f[1] ~= cid then
    results[#results + 1] = {'GONE', 0, 0, ''}
  elseif tonumber(due) > NOW then
    results[#results + 1] = {'NOT_DUE', tonumber(due), 0, ''}
  else
    local receivers, id = 0, ''
    local status = 'DENIED'
    if mode == 'p' then
      status = 'FIRED'
      local exp = nil
      if f[7] and f[7] ~= '' then exp = NOW + tonumber(f[7]) * 1000 end  -- counted from publication
      local _next
      id, _next, receivers = store_and_queue(f[2], f[3], f[4], f[5], f[6], cid, exp, '1', ti)
    end
    local audit = redis.call('XADD', P .. 'fired', 'MAXLEN', '~', FIRED_MAX, '*',
                             'cid', cid, 'gen', g, 'by', epoch, 'node', nid, 'due', due, 'at', NOW,
                             'status', status, 'cause', f[8] or '', 'dead_node', f[9] or '',
                             'dead_epoch', f[10] or '', 'ended', f[11] or '', 'receivers', receivers,
                             'topic', f[2], 'msg', id)
    redis.call('ZREM', P .. 'due', g)
    redis.call('DEL', w)
    local sk = P .. 'sess:' .. cid
    if redis.call('HGET', sk, 'pwill') == g then redis.call('HDEL', sk, 'pwill') end
    results[#results + 1] = {status, tonumber(due), receivers, audit}
  end
  i = nexti
end
ring_bells()
return {'OK', results}
