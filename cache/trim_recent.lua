-- Trims the recent list to its newest ARGV[1] entries. Its index by DID is not trimmed with it:
-- the index may hold members P recent has lost (appview/fold.h), and once it holds more than
-- ARGV[2] it is rebuilt from P recent (ZUNIONSTORE, weight 0): half the Valkey time of removing
-- each trimmed member from it (a ZRANGE and a ZREM of each). Nothing is in flight between the
-- index and P recent when this runs (the rule in appview/fold.h), so the rebuilt index holds
-- every member of P recent. KEYS[3], the index before the rebuild that earlier versions kept, is
-- deleted with it.
-- KEYS[1] P recent, KEYS[2] P recent/by-did, KEYS[3] P recent/by-did-old; ARGV[1] how many to
-- keep, ARGV[2] the index size that makes a rebuild. Returns the number of entries removed.
local recent, index = KEYS[1], KEYS[2]
local excess = redis.call('ZCARD', recent) - tonumber(ARGV[1])
if excess > 0 then
  redis.call('ZREMRANGEBYRANK', recent, 0, excess - 1)
else
  excess = 0
end
if redis.call('ZCARD', index) > tonumber(ARGV[2]) then
  redis.call('UNLINK', index, KEYS[3]) -- freed off the main thread
  redis.call('ZUNIONSTORE', index, 1, recent, 'WEIGHTS', 0)
end
return excess
