-- KEYS: bal, calls, ids, agg, hs ; ARGV: now_ms. The funds held by the client's calls that
-- count (the active ones from agg, the holds that have not lapsed) and its active calls.
local bal = redis.call('GET', KEYS[1])
if not bal then return {'missing', 0, 0} end
K.calls, K.ids, K.agg, K.hs = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
ready()
local agg = redis.call('HMGET', K.agg, 'ah', 'an')
local held, active = tonumber(agg[1]), tonumber(agg[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.hs, '(' .. ARGV[1], '+inf')) do
  local v = redis.call('HGET', K.calls, id)
  if v then held = held + decode(v).h end
end
return {bal, held, active}
