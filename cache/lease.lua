-- The ingest lease (appview/lease.c): one holder at a time, for ARGV[2] ms after its last renewal.
-- KEYS[1] P ingest-lease; ARGV: 1 holder id, 2 ttl ms, 3 "hold" (take or renew) | "release"
-- Returns 1 when the caller holds the lease after the call, 0 when it does not.
local cur = redis.call('GET', KEYS[1])
if ARGV[3] == 'release' then
  if cur == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
