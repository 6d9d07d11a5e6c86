-- KEYS: bal, calls, ids, agg, hs ; ARGV: now_ms. The funds held by the client's calls that
-- count (the active ones from agg, the holds that have not lapsed) and its active calls.
local bal = redis.call('GET', KEYS[1])
K.calls, K.ids, K.agg, K.hs = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = tonumber(ARGV[1])
local agg = redis.call('HMGET', K.agg, 'ah', 'an')
if not agg[2] then
  if not bal then return {'missing', 0, 0} end
  recount()
  agg = redis.call('HMGET', K.agg, 'ah', 'an')
end
local held, active = tonumber(agg[1]), tonumber(agg[2])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.hs, '(' .. now, '+inf')) do
  local v = redis.call('HGET', K.calls, id)
  if v then held = held + decode(v).h end
end
if not bal then return {'missing', held, active} end
return {bal, held, active}
