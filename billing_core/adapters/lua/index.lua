-- KEYS: the hold's index keys (one NAS key, one slot) ; ARGV: value, seconds to live
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end
return #KEYS
