-- Shared by the scripts that read a client's calls (loaded before them).
local function decode(v) return cjson.decode(v) end
-- a call that counts toward capacity and holds funds (domain.calls.counts)
local function counts(c, now) return c.s == 'a' or (c.s == 'h' and c.e > now) end
-- the authorization of the same call (NAS key, an identifier, account and number) held
-- under another id, whose accounting did not find it: removed with its index entries, and
-- its record returned (nil if none)
local function adopt(calls, ids, uid, nas, idents, account, called)
  local found = nil
  for _, k in ipairs(idents) do
    local other = redis.call('HGET', ids, nas .. '|' .. k)
    if other and other ~= uid then
      local v = redis.call('HGET', calls, other)
      if v then
        local o = decode(v)
        if o.x ~= 1 and o.a == account and o.c == called then
          redis.call('HDEL', calls, other)
          for _, kk in ipairs(o.i) do redis.call('HDEL', ids, o.n .. '|' .. kk) end
          found = found or o
        end
      end
    end
  end
  return found
end
