-- KEYS: the lease ; ARGV: this node's id, milliseconds to hold it. Taken when free or held by
-- this node already (then renewed): 1 when this node holds it now.
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
