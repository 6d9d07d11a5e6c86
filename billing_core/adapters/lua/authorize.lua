-- KEYS: bal, calls, ids, agg, hs [, lock: a login account with a password]
-- ARGV: now_ms, expires_ms, uid, account, called, nas, postpaid, credit, capacity, lb_threshold,
--       lb_capacity, auth_only, rate, setup, min_volume, interval, grace, max_call_length,
--       retention_ms, n_ids, ids..., acct_session_id
if KEYS[6] and redis.call('EXISTS', KEYS[6]) == 1 then return {'reject', 'locked_out'} end
local balraw = redis.call('GET', KEYS[1])
if not balraw then return {'missing'} end
K.calls, K.ids, K.agg, K.hs = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[19])
-- (gc: when the next check may run; hc missing: a tally to count first, see ready())
local agg = redis.call('HMGET', K.agg, 'gc', 'hc')
local counted = not agg[2]
if counted then recount(); agg[1] = nil end  -- (recount drops gc with the rest of agg)
-- the client's first authorization in ten seconds (gc: when the next may look) removes the
-- holds lapsed past their retention whose call was never accounted, and checks the tally
-- against the records (during a rolling upgrade, nodes of the earlier version write records
-- without it)
if not agg[1] or now >= tonumber(agg[1]) then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.hs, '-inf', '(' .. (now - retention))) do
    local v = redis.call('HGET', K.calls, id)
    if not v then
      redis.call('ZREM', K.hs, id)
    else
      local c = decode(v)
      if c.x ~= 1 then drop(id, c) end
    end
  end
  -- (a tally counted just now needs no check; advance() below reads the tally as the check
  -- and the removals above left it)
  if not counted then verify() end
  redis.call('HSET', K.agg, 'gc', now + 10000)
end
local bal = tonumber(balraw)
local expires = tonumber(ARGV[2])
local uid = ARGV[3]
local account = tonumber(ARGV[4])
local called = ARGV[5]
local nas = ARGV[6]
local postpaid = ARGV[7] == '1'
local credit = tonumber(ARGV[8])
local capacity = tonumber(ARGV[9])
local lb_threshold = ARGV[10]
local lb_capacity = tonumber(ARGV[11])
local auth_only = ARGV[12] == '1'
local rate = tonumber(ARGV[13])
local setup = tonumber(ARGV[14])
local minv = tonumber(ARGV[15])
local interval = tonumber(ARGV[16])
local grace = tonumber(ARGV[17])
local mcl = tonumber(ARGV[18])
local n_ids = tonumber(ARGV[20])

local own, own_c = nil, nil
for i = 1, n_ids do
  local found = redis.call('HGET', K.ids, nas .. '|' .. ARGV[20 + i])
  if found then
    local v = redis.call('HGET', K.calls, found)
    if v then
      local c = decode(v)
      if c.a == account and c.c == called then own = found; own_c = c; break end
    end
  end
end

-- the other calls that count: the active ones and the holds that have not lapsed (expiry
-- after now), from agg; a request older than hl (another node's clock, a request that
-- waited) also counts the holds that lapsed between its time and hl, read one by one
local tallied = advance(now)
local held, count = tallied[1] + tallied[3], tallied[2] + tallied[4]
local hl = tallied[5]
if now < hl then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.hs, '(' .. now, hl)) do
    local v = redis.call('HGET', K.calls, id)
    if v then held = held + decode(v).h; count = count + 1 end
  end
end
if own_c and (own_c.s == 'a' or own_c.e > now) then
  held = held - own_c.h; count = count - 1
end

local available = bal + credit
local funds = available - held

local function release_own()
  if own then
    local v = redis.call('HGET', K.calls, own)
    if v then drop(own, decode(v)) end
  end
end

if auth_only then
  if (not postpaid) and available <= 0 then
    if credit == 0 then return {'reject', 'zero_balance'} end
    return {'reject', 'credit_limit'}
  end
  return {'accept', -1, 0, funds, 0}
end

local cap = capacity
if lb_threshold ~= '' and lb_capacity >= 0 and available < tonumber(lb_threshold) then
  cap = lb_capacity
end
if cap >= 0 and count >= cap then release_own(); return {'reject', 'capacity'} end

local function billed(d)
  if d <= 0 or d <= grace then return 0 end
  if d <= minv then return minv end
  local over = d - minv
  return minv + math.floor((over + interval - 1) / interval) * interval
end
local function cost(d)
  local b = billed(d)
  if b == 0 then return 0 end
  return setup + math.floor((2 * rate * b + 60) / 120)
end

local grant, hold = mcl, 0
if not postpaid then
  if available <= 0 then
    release_own()
    if credit == 0 then return {'reject', 'zero_balance'} end
    return {'reject', 'credit_limit'}
  end
  local g1 = math.max(minv, interval)
  if funds < cost(g1) then release_own(); return {'reject', 'insufficient_funds'} end
  if cost(mcl) > funds then
    local kmin = math.max(0, math.floor((g1 - minv + interval - 1) / interval))
    local kmax = math.floor((mcl - minv) / interval)
    grant = 0
    if kmax >= kmin and cost(minv + kmin * interval) <= funds then
      local lo, hi = kmin, kmax
      while lo < hi do
        local mid = math.floor((lo + hi + 1) / 2)
        if cost(minv + mid * interval) <= funds then lo = mid else hi = mid - 1 end
      end
      grant = minv + lo * interval
    end
  end
  if grant < 1 then release_own(); return {'reject', 'insufficient_funds'} end
  hold = cost(grant)
end

local ids = {}
for i = 1, n_ids do ids[i] = ARGV[20 + i] end
local key = own or uid
local record = {s = 'h', h = hold, e = expires, a = account, c = called, n = nas, t = now,
                g = grant, i = ids, x = 0, q = ARGV[21 + n_ids]}
-- the record this one replaces (its part in the tally is taken away): the call's own, or
-- one already under this uid (a request sent again under the same uid)
local old = nil
local v = redis.call('HGET', K.calls, key)
if v then
  old = decode(v)
  if own then
    if old.s == 'a' then record.s = 'a' end
    record.x = old.x
    record.t = old.t
  end
end
put(key, record, old)
for i = 1, n_ids do redis.call('HSET', K.ids, nas .. '|' .. ids[i], key) end
return {'accept', grant, hold, funds, key}
