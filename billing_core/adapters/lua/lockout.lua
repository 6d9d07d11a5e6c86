-- KEYS: lock, fail ; ARGV: failed (0/1), max failures, window seconds, lockout seconds
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if ARGV[1] ~= '1' then return 0 end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[4])
  redis.call('DEL', KEYS[2])
end
return 0
