-- Stores a getStats result (appview/stats.c).
-- KEYS: 1 P{D}/repo/<R>/stats, 2 P{D}/repo/<R>/holdstats, 3 P{D}/repo/<R>/holds, 4 P{D}/keys
-- ARGV: 1 aggregate JSON, 2 its TTL, 3 TTL of the last known values, 4 n, then n pairs
-- hold DID / "pulls pushes lastPull lastPush" ('-' when absent) of the holds that answered,
-- then the DIDs of holds that reported counts (added to KEYS[3]).
-- The keys join P{D}/keys so an account purge removes them too; the set lives as long as the
-- longest of them.
local n = tonumber(ARGV[4])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
for i = 5 + 2 * n, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
if n > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
if #ARGV >= 5 + 2 * n then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
redis.call('SADD', KEYS[4], KEYS[1], KEYS[2], KEYS[3])
redis.call('EXPIRE', KEYS[4], ARGV[3], 'NX')
redis.call('EXPIRE', KEYS[4], ARGV[3], 'GT')
return 1
