-- KEYS: bal, calls, ids, agg, hs, seq ; ARGV: JSON list of operations, the live sequence they bring
-- the client to ('' for effects outside the ledger's order: an Accounting-On/Off's release).
-- 'missing': not loaded; 'old': already here (a load read them); 'gap': an earlier write's
-- effects never arrived, so these cannot go on top: the client is reloaded instead
if not redis.call('GET', KEYS[1]) then return 'missing' end
if ARGV[2] ~= '' then
  local seq = tonumber(ARGV[2])
  local current = tonumber(redis.call('GET', KEYS[6]) or '0')
  if current >= seq then return 'old' end
  if current ~= seq - 1 then return 'gap' end
  redis.call('SET', KEYS[6], seq)
end
K.calls, K.ids, K.agg, K.hs = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
ready()
local ops = cjson.decode(ARGV[1])
for _, op in ipairs(ops) do
  if op.k == 'bal' then  -- domain.live_balance.moved (the sequence moved above)
    redis.call('INCRBY', KEYS[1], op.v)
  elseif op.k == 'act' then
    local held = adopt(op.u, op.n, op.i, op.a, op.c)
    local v = redis.call('HGET', K.calls, op.u)
    local c, was = nil, nil
    if v then
      c = decode(v)
      was = {s = c.s, h = c.h, e = c.e}
    else
      c = {h = op.h, a = op.a, c = op.c, n = op.n, t = 0, g = op.g, i = op.i, e = 0}
      if held then c.h = held.h; c.g = held.g; c.t = held.t end
      for _, k in ipairs(op.i) do redis.call('HSET', K.ids, op.n .. '|' .. k, op.u) end
    end
    c.s = 'a'; c.x = 1
    put(op.u, c, was)
  elseif op.k == 'rehold' then
    local v = redis.call('HGET', K.calls, op.u)
    if v then
      local c = decode(v)
      local was = {s = c.s, h = c.h, e = c.e}
      c.s = 'h'; c.e = op.e
      put(op.u, c, was)
    end
  elseif op.k == 'rel' then
    local v = redis.call('HGET', K.calls, op.u)
    if v then drop(op.u, decode(v)) end
    if op.i then adopt(op.u, op.n, op.i, op.a, op.c) end
  elseif op.k == 'relnas' then
    local all = redis.call('HGETALL', K.calls)
    for i = 1, #all, 2 do
      local c = decode(all[i + 1])
      if c.n == op.n and c.t < op.b then drop(all[i], c) end
    end
  end
end
return 'ok'
