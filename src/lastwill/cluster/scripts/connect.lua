-- connect(epoch, client id, clean start, session expiry, node id, user, user check, recovery grace ms,
--         since ms, has will, [topic, payload, qos, retain, props, delay, message expiry, protocol level])
--   -> {'OK', gen, session present, kick epoch, kick gen, fire_now, cancelled, subscriptions,
--       queued, user changed} | {'TAKEN', conn ms} | {'FENCED'}
--   since ms:  0, or a late claim: a connection the node accepted at this time (engine ms) while it
--              could not reach the engine (Clean Start 1, no will, Session Expiry 0). If the client id
--              connected on another node since then, that newer connection has the session [MQTT-3.1.4-3]:
--              'TAKEN' with its connect time, nothing written (the node closes its connection).
--   fire_now:  flat (gen, due ms) of wills of this client that must be published now: they are in
--              'due' with a deadline that has passed, for any node to claim with fire()
--   cancelled: flat (gen, due ms, cause of the connection end, dead node id) of wills discarded
--              unpublished because the client came back before they were due [MQTT-3.1.3-9]
--   subscriptions: flat (filter, options) of the resumed session
--
-- Takes the session for this epoch under a new generation (INCR gen: never reused).
-- The connection it replaces:
--   * on a live node (any, this one too): taken over [MQTT-3.1.4-3]; that node gets a kick on
--     ctl:<epoch> and its later disconnect() of the old generation changes nothing. The old
--     connection ended now without DISCONNECT: its will waits min(Will Delay, Session Expiry).
--   * on a node whose lease lapsed: it ended at that lease end, and its will waits
--     max(recovery grace, min(Will Delay, Session Expiry)) from there (the reaper's rule).
-- An old will (armed there, or pending here) that is due by now, or whose session ends now
-- (Clean Start 1 [MQTT-3.1.2-4], session expired, the other user's session), goes to 'due' at once
-- [MQTT-3.1.2-8]; otherwise the client is back in time and it is cancelled [MQTT-3.1.3-9].
local epoch, cid, clean, expiry, nid = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local user, ucheck, rgrace_ms, since, has_will = ARGV[7], ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
if not live(epoch) then return {'FENCED'} end

local sk = P .. 'sess:' .. cid
local s = redis.call('HMGET', sk, 'owner', 'gen', 'expiry', 'disc_ms', 'will', 'pwill', 'user', 'conn_ms', 'node')
local exists = s[1] ~= false
-- (a newer connection of this node id is this very connection, claimed by an earlier incarnation of the
-- node that fenced itself meanwhile: a newer CONNECT on the node itself would have taken it over there)
if since > 0 and exists and tonumber(s[8] or 0) > since and s[9] ~= nid then return {'TAKEN', s[8]} end
local ends = clean == '1'
local user_changed = 0
if exists and ucheck == '1' and s[7] ~= user then ends = true; user_changed = 1 end
local kick, kick_gen = 0, 0
local fire_now, cancelled = {}, {}
local survives = exists

local function cancel_cause(w)
  local c = redis.call('HMGET', w, 'cause', 'dead_node')
  return c[1] or '', c[2] or ''
end

if exists then
  local owner, oexp = s[1], tonumber(s[3])
  if owner ~= '0' then
    local end_at, grace, cause, dead_node
    if live(owner) then
      kick, kick_gen = tonumber(owner), s[2]
      end_at, grace, cause, dead_node = NOW, 0, 'takeover', ''
      if oexp == 0 then survives = false end  -- it ends with the connection taken over
    else
      end_at, grace, cause = lease_end_of(owner), rgrace_ms, 'node_died'
      dead_node = redis.call('HGET', P .. 'node:' .. owner, 'nid') or ''
      if oexp ~= NEVER and end_at + math.max(oexp * 1000, rgrace_ms) <= NOW then survives = false end
    end
    local g = s[5]
    if g then
      local w = P .. 'will:' .. g
      local delay = tonumber(redis.call('HGET', w, 'delay'))
      local due = end_at + will_wait_ms(delay, oexp, grace)
      if due <= NOW or ends or not survives then
        local at = math.min(due, NOW)
        redis.call('ZADD', P .. 'due', at, g)
        redis.call('HSET', w, 'due_ms', at, 'ended_ms', end_at, 'cause', cause, 'dead_node', dead_node,
                   'dead_epoch', owner)
        fire_now[#fire_now + 1] = g
        fire_now[#fire_now + 1] = at
      else
        redis.call('DEL', w)
        cancelled[#cancelled + 1] = g
        cancelled[#cancelled + 1] = due
        cancelled[#cancelled + 1] = cause
        cancelled[#cancelled + 1] = dead_node
      end
    end
  else
    local sdue = redis.call('ZSCORE', P .. 'sessdue', cid)
    if sdue and tonumber(sdue) <= NOW then survives = false end
    local pg = s[6]
    if pg then
      local due = redis.call('ZSCORE', P .. 'due', pg)
      if due then
        due = tonumber(due)
        if due > NOW and (ends or not survives) then
          redis.call('ZADD', P .. 'due', NOW, pg)
          redis.call('HSET', P .. 'will:' .. pg, 'due_ms', NOW)
          due = NOW
        end
        if due <= NOW then
          fire_now[#fire_now + 1] = pg
          fire_now[#fire_now + 1] = due
        else
          local c, dn = cancel_cause(P .. 'will:' .. pg)
          redis.call('ZREM', P .. 'due', pg)
          redis.call('DEL', P .. 'will:' .. pg)
          cancelled[#cancelled + 1] = pg
          cancelled[#cancelled + 1] = due
          cancelled[#cancelled + 1] = c
          cancelled[#cancelled + 1] = dn
        end
      end
    end
  end
end

local present = 0
if exists then
  if ends or not survives then
    end_session(cid)
  else
    present = 1
    if s[1] ~= '0' then redis.call('SREM', P .. 'owned:' .. s[1], cid) end
    redis.call('HDEL', sk, 'will', 'pwill', 'disc_ms')
  end
end
local gen = redis.call('INCR', P .. 'gen')
redis.call('HSET', sk, 'owner', epoch, 'gen', gen, 'expiry', expiry, 'node', nid, 'user', user, 'conn_ms', NOW)
redis.call('ZREM', P .. 'sessdue', cid)
redis.call('SADD', P .. 'owned:' .. epoch, cid)
if has_will == '1' then
  redis.call('HSET', P .. 'will:' .. gen, 'cid', cid, 'gen', gen, 'topic', ARGV[12], 'payload', ARGV[13],
             'qos', ARGV[14], 'retain', ARGV[15], 'props', ARGV[16], 'delay', ARGV[17], 'mexp', ARGV[18],
             'proto', ARGV[19], 'user', user, 'armed_ms', NOW, 'epoch', epoch, 'node', nid)
  redis.call('HSET', sk, 'will', gen)
end
if kick ~= 0 then
  redis.call('PUBLISH', P .. 'ctl:' .. kick, cid .. '\0' .. kick_gen)
end
redis.call('PUBLISH', P .. 'held', cid .. '\0' .. epoch)  -- (where its QoS 0 goes now: a hint to every node)
local subs, queued = {}, 0
if present == 1 then
  subs = redis.call('HGETALL', P .. 'subs:' .. cid)
  queued = redis.call('XLEN', P .. 'q:' .. cid)
end
return {'OK', gen, present, kick, kick_gen, fire_now, cancelled, subs, queued, user_changed}
