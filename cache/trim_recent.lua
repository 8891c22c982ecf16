-- Trims the recent list to its newest ARGV[1] entries, and its index with it (the entries
-- removed from P recent leave P recent/by-did too: see cache/forget_recent.lua).
-- KEYS[1] P recent, KEYS[2] P recent/by-did; ARGV[1] how many to keep.
-- Returns the number of entries removed.
local recent, index = KEYS[1], KEYS[2]
local excess = redis.call('ZCARD', recent) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local old = redis.call('ZRANGE', recent, 0, excess - 1)
for i = 1, #old, 1000 do -- one ZREM a thousand members: Lua's unpack has a limit
  redis.call('ZREM', index, unpack(old, i, math.min(i + 999, #old)))
end
redis.call('ZREMRANGEBYRANK', recent, 0, excess - 1)
return excess
