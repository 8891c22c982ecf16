-- Forgets a DID whose account was deleted or taken down, and remembers when, so replayed
-- older commits are not folded back in (see apply.lua).
-- KEYS[1] P{D}/keys; ARGV: 1 base "P{D}/", 2 time_us of the account event, 3 ttl of the mark
-- Returns the flat list repository, digest of every manifest dropped (for the recent list),
-- followed by the handle that was cached for the DID ("" when none). The dropped manifests are
-- kept with the mark (P{D}/gone-recent), so a purge replayed after a crash returns them again
-- and the caller's removals from the recent list are never lost.
local keyset, base = KEYS[1], ARGV[1]
local dropped = base .. 'gone-recent'
for _, k in ipairs(redis.call('SMEMBERS', keyset)) do
  local repo = string.match(k, '^' .. base:gsub('%p', '%%%0') .. 'repo/(.+)/manifests$')
  if repo then
    for _, digest in ipairs(redis.call('ZRANGE', k, 0, -1)) do
      redis.call('SADD', dropped, repo .. ' ' .. digest)
    end
  end
  redis.call('DEL', k)
end
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', dropped)) do
  local repo, digest = string.match(m, '^(%S+) (%S+)$')
  out[#out + 1] = repo
  out[#out + 1] = digest
end
redis.call('EXPIRE', dropped, ARGV[3])
local handle = redis.call('HGET', base .. 'id', 'handle')
redis.call('DEL', keyset, base .. 'id', base .. 'complete', base .. 'neg')
local prev = redis.call('GET', base .. 'gone')
if not prev or tonumber(prev) < tonumber(ARGV[2]) then
  redis.call('SET', base .. 'gone', ARGV[2], 'EX', ARGV[3])
end
out[#out + 1] = handle or ''
return out
