-- lib.lua: prepended to every script of the engine (engine.py joins the files before SCRIPT LOAD).
--
-- Conventions of every script:
--   KEYS[1] = P .. 'epoch' (the anchor key: with a hash-tag prefix such as '{lw}:' every key of the
--             engine is in its slot), ARGV[1] = P (the key prefix), ARGV[2] = the caller's epoch
--             (0 for the read-only scripts that any process may run).
--   Every other key is built from P inside the script.
--   Lua has no rollback: each script validates everything (the fence first) before its first write.
--   Times are integer milliseconds of the engine's clock (TIME), never a node's.
local P = ARGV[1]
local NEVER = 4294967295          -- Session Expiry Interval "does not expire"
local ROUTELOG_MAX = 100000       -- routelog entries kept (a replica further behind takes a snapshot)
local FIRED_MAX = 1000000         -- audit records kept in the fired stream

-- the engine clock: TIME, plus the offset a test may set with RedisEngine.advance_clock (the key is
-- absent in production; check_engine refuses an engine that has it unless told it is a test)
local function engine_now()
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local off = redis.call('GET', P .. 'clock:offset')
  if off then ms = ms + tonumber(off) end
  return ms
end
local NOW = engine_now()

-- the lease end of a live epoch, or nil: an epoch is live while it is in the nodes ZSET with a lease
-- that has not ended. A node whose lease ended is fenced even before a reaper removed it.
local function live(epoch)
  local s = redis.call('ZSCORE', P .. 'nodes', epoch)
  if s and tonumber(s) >= NOW then return tonumber(s) end
  return nil
end

-- when the lease of a dead (or lapsed) epoch ended
local function lease_end_of(epoch)
  local s = redis.call('ZSCORE', P .. 'reaping', epoch) or redis.call('ZSCORE', P .. 'nodes', epoch)
  if s then return tonumber(s) end
  s = redis.call('HGET', P .. 'node:' .. epoch, 'lease_end')
  if s then return tonumber(s) end
  return NOW
end

-- how long after its connection ended a will is due: min(Will Delay, Session Expiry) [MQTT-3.1.3-9],
-- at least the recovery grace when the connection ended with its node (grace_ms 0 otherwise).
-- MQTT 3.1.1 wills are stored with delay 0.
local function will_wait_ms(delay, expiry, grace_ms)
  local w = math.min(delay, expiry) * 1000
  if grace_ms > w then w = grace_ms end
  return w
end

-- one reference fewer to a stored message (a queue entry acknowledged or dropped, a retained message
-- replaced): the message is deleted with its last reference (stored once, referred to by id)
local function unref(id)
  local k = P .. 'msg:' .. id
  if redis.call('HINCRBY', k, 'refs', -1) <= 0 then redis.call('DEL', k) end
end

-- a change of the subscription table: bump routever and log it (a replica applies the log in order)
local function route_change(op, cid, filter, opts)
  local ver = redis.call('INCR', P .. 'routever')
  redis.call('XADD', P .. 'routelog', 'MAXLEN', '~', ROUTELOG_MAX, ver .. '-1',
             'o', op, 'c', cid, 'f', filter, 'p', opts)
  return ver
end

-- the session ends: its subscriptions (logged), its queue (references dropped), its expiry entry,
-- its ownership. Its wills are handled by the caller first (a pending will stays in 'due').
local function end_session(cid)
  local sk = P .. 'sess:' .. cid
  local subs = redis.call('HKEYS', P .. 'subs:' .. cid)
  for _, f in ipairs(subs) do
    redis.call('HDEL', P .. 'routes', cid .. '\0' .. f)
    route_change('u', cid, f, '')
  end
  redis.call('DEL', P .. 'subs:' .. cid)
  local q = P .. 'q:' .. cid
  local entries = redis.call('XRANGE', q, '-', '+')
  for _, e in ipairs(entries) do
    local f = e[2]
    for i = 1, #f, 2 do if f[i] == 'm' then unref(f[i + 1]) end end
  end
  redis.call('DEL', q, P .. 'qst:' .. cid)
  redis.call('ZREM', P .. 'sessdue', cid)
  local owner = redis.call('HGET', sk, 'owner')
  if owner and owner ~= '0' then redis.call('SREM', P .. 'owned:' .. owner, cid) end
  redis.call('DEL', sk)
end

-- the retained message of a topic becomes message id (or none: id == nil)
local function set_retained(topic, id, expires_ms)
  local old = redis.call('HGET', P .. 'ret', topic)
  if old then unref(old) end
  if id then
    redis.call('HSET', P .. 'ret', topic, id)
    redis.call('HINCRBY', P .. 'msg:' .. id, 'refs', 1)
    if expires_ms then redis.call('ZADD', P .. 'retexp', expires_ms, topic)
    else redis.call('ZREM', P .. 'retexp', topic) end
  else
    redis.call('HDEL', P .. 'ret', topic)
    redis.call('ZREM', P .. 'retexp', topic)
  end
end

-- doorbells: owner epoch -> list of client ids that got a queue entry, rung once per script
local BELLS = {}
local function bell(cid)
  local owner = redis.call('HGET', P .. 'sess:' .. cid, 'owner')
  if owner and owner ~= '0' then
    local l = BELLS[owner]
    if not l then l = {}; BELLS[owner] = l end
    l[#l + 1] = cid
  end
end
local function ring_bells()
  for owner, cids in pairs(BELLS) do
    redis.call('PUBLISH', P .. 'bell:' .. owner, table.concat(cids, '\0'))
  end
end

-- store a message once and queue a reference to it for each target.
-- targets: ARGV from index i: k, then k x (client id, qos, retain flag, subscription ids).
-- retain: '1' to make it the retained message of its topic (an empty payload deletes that).
-- Returns the message id ('' when nobody got it and it was not retained), the index after the
-- targets, and the number of receivers.
local function store_and_queue(topic, payload, qos, retain, props, origin, expires_ms, is_will, i)
  local k = tonumber(ARGV[i])
  local keep = retain == '1' and payload ~= ''
  local id = ''
  if k > 0 or keep then
    id = tostring(redis.call('INCR', P .. 'msgid'))
    redis.call('HSET', P .. 'msg:' .. id, 'topic', topic, 'payload', payload, 'qos', qos, 'retain', retain,
               'props', props, 'origin', origin, 'exp', expires_ms or '', 'will', is_will, 'refs', k)
  end
  for j = 0, k - 1 do
    local b = i + 1 + j * 4
    local t = ARGV[b]
    redis.call('XADD', P .. 'q:' .. t, '*', 'm', id, 'q', ARGV[b + 1], 'r', ARGV[b + 2], 's', ARGV[b + 3])
    bell(t)
  end
  if retain == '1' then
    if keep then set_retained(topic, id, expires_ms) else set_retained(topic, nil, nil) end
  end
  return id, i + 1 + k * 4, k
end
