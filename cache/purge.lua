-- Forgets a DID whose account was deleted or taken down, and remembers when, so replayed
-- older commits are not folded back in (appview/plan.c checks the mark).
-- KEYS[1] P{D}/keys, KEYS[2] P recent; ARGV: 1 base "P{D}/", 2 time_us of the account event,
--       3 ttl of the mark, 4 D
-- Returns the handle that was cached for the DID ("" when none).
-- The index keys are found from P{D}/repos, which every index write refreshes, so it outlives
-- each repository's keys; P{D}/keys lists the keys whose names cannot be derived. The DID's
-- P recent entries ("D R G X createdAt") are found by a scan of P recent for "D ": it holds at
-- most its newest 10,000, and purges are rare.
local keyset, recent, base, did = KEYS[1], KEYS[2], ARGV[1], ARGV[4]
local repos = base .. 'repos'
for _, r in ipairs(redis.call('ZRANGE', repos, 0, -1)) do
  local p = base .. 'repo/' .. r .. '/'
  redis.call('DEL', p .. 'manifests', p .. 'tags')
end
local cursor = '0'
repeat
  local page = redis.call('ZSCAN', recent, cursor, 'MATCH', did .. ' *', 'COUNT', 1000)
  cursor = page[1]
  for i = 1, #page[2], 2 do redis.call('ZREM', recent, page[2][i]) end
until cursor == '0'
for _, k in ipairs(redis.call('SMEMBERS', keyset)) do redis.call('DEL', k) end
local handle = redis.call('HGET', base .. 'id', 'handle')
redis.call('DEL', keyset, repos, base .. 'recs', base .. 'id', base .. 'complete', base .. 'neg')
local prev = redis.call('GET', base .. 'gone')
if not prev or tonumber(prev) < tonumber(ARGV[2]) then
  redis.call('SET', base .. 'gone', ARGV[2], 'EX', ARGV[3])
end
return handle or ''
