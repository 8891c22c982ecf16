-- Forgets a DID whose account was deleted or taken down, and remembers when, so replayed
-- older commits are not folded back in (see apply.lua).
-- KEYS[1] P{D}/keys; ARGV: 1 base "P{D}/", 2 time_us of the account event, 3 ttl of the mark
--       and the outbox, 4 D
-- Returns the handle that was cached for the DID ("" when none), then the DID's outbox as
-- member, change pairs: removals from the recent list of every manifest dropped, with any
-- change still pending from before. The outbox survives the purge, so a change a crash kept
-- from the recent list is still driven after it.
local keyset, base, did = KEYS[1], ARGV[1], ARGV[4]
local outbox = base .. 'outbox'
local prefix = '^' .. base:gsub('%p', '%%%0') .. 'repo/(.+)/manifests$'
for _, k in ipairs(redis.call('SMEMBERS', keyset)) do
  local repo = string.match(k, prefix)
  if repo then
    for _, digest in ipairs(redis.call('ZRANGE', k, 0, -1)) do
      redis.call('HSET', outbox, did .. ' ' .. repo .. ' ' .. digest, '-')
    end
  end
  redis.call('DEL', k)
end
local handle = redis.call('HGET', base .. 'id', 'handle')
redis.call('DEL', keyset, base .. 'id', base .. 'complete', base .. 'neg')
local prev = redis.call('GET', base .. 'gone')
if not prev or tonumber(prev) < tonumber(ARGV[2]) then
  redis.call('SET', base .. 'gone', ARGV[2], 'EX', ARGV[3])
end
if redis.call('EXISTS', outbox) == 1 then redis.call('EXPIRE', outbox, ARGV[3]) end
local out = redis.call('HGETALL', outbox)
table.insert(out, 1, handle or '')
return out
