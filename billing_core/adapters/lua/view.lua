-- KEYS: bal, calls ; ARGV: now_ms
local bal = redis.call('GET', KEYS[1])
local held, active = 0, 0
local all = redis.call('HGETALL', KEYS[2])
local now = tonumber(ARGV[1])
for i = 1, #all, 2 do
  local c = decode(all[i + 1])
  if counts(c, now) then held = held + c.h end
  if c.s == 'a' then active = active + 1 end
end
if not bal then return {'missing', held, active} end
return {bal, held, active}
