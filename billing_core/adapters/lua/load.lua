-- KEYS: bal, calls, seq, ids, agg, hs ; ARGV: balance micros, JSON {uid: record} of accounted calls,
-- replace (0: only when not loaded; 1: also over a state whose sequence is not newer), the
-- live sequence of the database's reading, JSON [uid] of holds whose call the database has
-- ended (their release never arrived). A load never takes a client back in sequence.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[3] == '0' then return 0 end
  if tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[4]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[4])
K.calls, K.ids, K.agg, K.hs = KEYS[2], KEYS[4], KEYS[5], KEYS[6]
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local c = cjson.decode(all[i + 1])
  if c.x == 1 then redis.call('HDEL', KEYS[2], all[i]) end
end
for _, uid in ipairs(cjson.decode(ARGV[5] or '[]')) do
  local v = redis.call('HGET', KEYS[2], uid)
  if v then
    local c = cjson.decode(v)
    if c.x ~= 1 then
      redis.call('HDEL', KEYS[2], uid)
      for _, k in ipairs(c.i) do redis.call('HDEL', KEYS[4], c.n .. '|' .. k) end
    end
  end
end
for uid, record in pairs(cjson.decode(ARGV[2])) do
  adopt(uid, record.n, record.i, record.a, record.c)
  redis.call('HSET', KEYS[2], uid, cjson.encode(record))
end
recount()
return 1
