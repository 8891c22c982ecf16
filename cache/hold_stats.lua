-- An io.atcr.hold.stats record from the firehose (it lives in the hold's repo; its `did` names
-- the user): the hold's counts become the last known values getStats shows while that hold
-- is down, without asking it (see "Stats keys" in SCHEMA.md). Guarded by the record's
-- updatedAt per hold, so a replayed older record never overwrites a newer one.
-- KEYS: 1 P{U}/repo/<R>/holdstats, 2 P{U}/repo/<R>/holds, 3 P{U}/repo/<R>/holdstats-at,
--       4 P{U}/repo/<R>/stats, 5 P{U}/keys
-- ARGV: 1 hold DID, 2 "pulls pushes lastPull lastPush" ('-' when absent), 3 updatedAt ms,
--       4 ttl of the last known values
local at = redis.call('HGET', KEYS[3], ARGV[1])
if at and tonumber(at) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4]) -- the cached aggregate no longer adds up
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
-- The keys join P{U}/keys so an account purge removes them too.
redis.call('SADD', KEYS[5], KEYS[1], KEYS[2], KEYS[3])
redis.call('EXPIRE', KEYS[5], ARGV[4], 'NX')
redis.call('EXPIRE', KEYS[5], ARGV[4], 'GT')
return 1
