-- Shared by the scripts that read a client's calls (loaded before them).
-- K: the client's keys, set by each script before it calls these: calls (uid -> record), ids
-- (NAS key|identifier -> uid), agg (hash: ah, an: the holds and the number of its active
-- calls; hh, hc: the holds and the number of its held calls whose expiry is after hl, a
-- time in ms that authorizations move forward) and hs (sorted set: the uids of its held
-- calls, by hold expiry). agg and hs follow every write to calls (put, drop), so that an
-- authorization reads what counts in one HMGET and decodes only the holds that lapsed since
-- the last one (each hold once): decoding every record made Redis's CPU per authorization
-- grow with the client's calls in progress (18 ms at 5,000), with its lapsed holds, kept a
-- day (the calls that were never accounted), and with its holds not yet lapsed.
local K = {}
local function decode(v) return cjson.decode(v) end
-- a call that counts toward capacity and holds funds (domain.calls.counts)
local function counts(c, now) return c.s == 'a' or (c.s == 'h' and c.e > now) end
-- a record's part in agg and hs, added (sign 1) or taken away (-1); s, h and e are all it reads
local function tally(uid, c, sign)
  if c.s == 'a' then
    -- as an integer: a Lua number of zero times -1 would be sent as '-0', which HINCRBY refuses
    if c.h ~= 0 then redis.call('HINCRBY', K.agg, 'ah', string.format('%d', sign * c.h)) end
    redis.call('HINCRBY', K.agg, 'an', sign)
    return
  end
  if sign > 0 then
    redis.call('ZADD', K.hs, c.e, uid)
  else
    redis.call('ZREM', K.hs, uid)
  end
  if c.e > tonumber(redis.call('HGET', K.agg, 'hl') or '0') then  -- not lapsed yet
    if c.h ~= 0 then redis.call('HINCRBY', K.agg, 'hh', string.format('%d', sign * c.h)) end
    redis.call('HINCRBY', K.agg, 'hc', sign)
  end
end
-- agg and hs counted again from the records (hl kept: the holds after it are counted)
local function recount()
  local hl = redis.call('HGET', K.agg, 'hl') or '0'
  redis.call('DEL', K.agg, K.hs)
  redis.call('HSET', K.agg, 'ah', 0, 'an', 0, 'hh', 0, 'hc', 0, 'hl', hl)
  local all = redis.call('HGETALL', K.calls)
  for i = 1, #all, 2 do tally(all[i], decode(all[i + 1]), 1) end
end
-- hl moved forward to now: the holds that lapsed since are taken off hh and hc (decoded once
-- each, when they lapse); the new agg {ah, an, hh, hc, hl}
local function advance(now)
  local agg = redis.call('HMGET', K.agg, 'ah', 'an', 'hh', 'hc', 'hl')
  local hh, hc, hl = tonumber(agg[3]), tonumber(agg[4]), tonumber(agg[5] or '0')
  if now > hl then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.hs, '(' .. hl, now)) do
      local v = redis.call('HGET', K.calls, id)
      if v then
        local c = decode(v)
        hh = hh - c.h; hc = hc - 1
      else
        redis.call('ZREM', K.hs, id)  -- (no record: never tallied by put)
      end
    end
    redis.call('HSET', K.agg, 'hh', string.format('%d', hh), 'hc', hc, 'hl', now)
    hl = now
  end
  return {tonumber(agg[1]), tonumber(agg[2]), hh, hc, hl}
end
-- agg and hs checked against the records; if they differ (a node of an earlier version
-- wrote records without them, during a rolling upgrade), they are counted again
local function verify()
  local ah, an, hh, hc, held = 0, 0, 0, 0, {}
  local n_held = 0
  local hl = tonumber(redis.call('HGET', K.agg, 'hl') or '0')
  local all = redis.call('HGETALL', K.calls)
  for i = 1, #all, 2 do
    local c = decode(all[i + 1])
    if c.s == 'a' then ah = ah + c.h; an = an + 1
    else
      held[all[i]] = c.e; n_held = n_held + 1
      if c.e > hl then hh = hh + c.h; hc = hc + 1 end
    end
  end
  local agg = redis.call('HMGET', K.agg, 'ah', 'an', 'hh', 'hc')
  local same = tonumber(agg[1]) == ah and tonumber(agg[2]) == an
    and tonumber(agg[3]) == hh and tonumber(agg[4]) == hc
  if same then
    local kept = redis.call('ZRANGE', K.hs, 0, -1, 'WITHSCORES')
    same = #kept == 2 * n_held
    for i = 1, #kept, 2 do
      if not same then break end
      same = held[kept[i]] == tonumber(kept[i + 1])
    end
  end
  if not same then recount() end
end
-- a client whose records were written without agg, or without its held tally (by a version
-- before it), is counted once
local function ready()
  if redis.call('HEXISTS', K.agg, 'hc') == 0 then recount() end
end
-- write record c under uid; was: the record it replaces ({s, h} at least), or nil
local function put(uid, c, was)
  if was then tally(uid, was, -1) end
  tally(uid, c, 1)
  redis.call('HSET', K.calls, uid, cjson.encode(c))
end
-- remove record c (decoded) of uid, with its index entries
local function drop(uid, c)
  tally(uid, c, -1)
  redis.call('HDEL', K.calls, uid)
  for _, k in ipairs(c.i) do redis.call('HDEL', K.ids, c.n .. '|' .. k) end
end
-- the authorization of the same call (NAS key, an identifier, account and number) held
-- under another id, whose accounting did not find it: removed with its index entries, and
-- its record returned (nil if none)
local function adopt(uid, nas, idents, account, called)
  local found = nil
  for _, k in ipairs(idents) do
    local other = redis.call('HGET', K.ids, nas .. '|' .. k)
    if other and other ~= uid then
      local v = redis.call('HGET', K.calls, other)
      if v then
        local o = decode(v)
        if o.x ~= 1 and o.a == account and o.c == called then
          drop(other, o)
          found = found or o
        end
      end
    end
  end
  return found
end
