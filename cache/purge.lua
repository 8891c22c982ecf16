-- Forgets a DID whose account was deleted or taken down, and remembers when, so replayed
-- older commits are not folded back in (appview/plan.c checks the mark). Its P recent entries
-- are removed by cache/forget_recent.lua, on P recent's own slot.
-- KEYS: 1 P{D}/keys, 2 P{D}/repos, 3 P{D}/recs, 4 P{D}/id, 5 P{D}/complete, 6 P{D}/neg,
--       7 P{D}/gone (named, so a cluster moving the slot answers TRYAGAIN rather than let the
--       script see half of the DID's keys); ARGV: 1 base "P{D}/", 2 time_us of the account
--       event, 3 ttl of the mark
-- Returns the handle that was cached for the DID ("" when none).
-- The index keys are found from P{D}/repos, which every index write refreshes, so it outlives
-- each repository's keys; P{D}/keys lists the keys whose names cannot be derived.
local base = ARGV[1]
for _, r in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local p = base .. 'repo/' .. r .. '/'
  redis.call('DEL', p .. 'manifests', p .. 'tags')
end
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', k) end
local handle = redis.call('HGET', KEYS[4], 'handle')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
local prev = redis.call('GET', KEYS[7])
if not prev or tonumber(prev) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[7], ARGV[2], 'EX', ARGV[3])
end
return handle or ''
