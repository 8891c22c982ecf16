-- Folds one record event into the index (see cache/SCHEMA.md). Atomic, and idempotent: an
-- event whose rev is not newer than what is stored (record or tombstone) changes nothing.
-- KEYS[1] record key P{D}/rec/<collection>/<rkey>
-- ARGV: 1 base "P{D}/", 2 op "put"|"del", 3 rev, 4 time_us (0: not from the firehose),
--       5 ttl, 6 kind "m"|"t"|"s", 7 cid, 8 record JSON, 9 repository, 10 key (digest or tag),
--       11 digest the tag points at, 12 createdAt ms, 13 rkey
-- Returns {applied, old repository, old key, old kind, replayed}: old* name the record this
-- event replaced (false when none); replayed is 1 when this very event (same rev) was applied
-- before, and old* are then what it replaced back then, so the caller can repeat its
-- follow-ups outside this slot (the recent list), which a crash may have lost. For that, a
-- record keeps what it replaced (prepo, pkey, pkind) and a tombstone what it deleted.
--
-- This runs for every indexed event, so it does as few calls as it can: the purge mark is
-- read only when the record is absent (a purged DID has no records: whatever exists was
-- written after the purge, by a later rev), keys join the purge set only when they are new, and an update that keeps its repository and key leaves the index
-- entries where they are.
local rk, base = KEYS[1], ARGV[1]
local op, rev, time_us, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local kind, repo, key, rkey = ARGV[6], ARGV[9], ARGV[10], ARGV[13]
local keyset = base .. 'keys'

local cur = redis.call('HMGET', rk, 'rev', 'repo', 'key', 'del', 'kind')
if not cur[1] then
  local gone = redis.call('GET', base .. 'gone')
  if gone and time_us > 0 and time_us <= tonumber(gone) then return {0, false, false, false, 0} end
elseif cur[1] >= rev then
  if cur[1] ~= rev then return {0, false, false, false, 0} end
  if cur[4] == '1' then return {0, cur[2] or false, cur[3] or false, cur[5] or false, 1} end
  local prev = redis.call('HMGET', rk, 'prepo', 'pkey', 'pkind')
  return {0, prev[1] or false, prev[2] or false, prev[3] or false, 1}
end

local function repo_prefix(r) return base .. 'repo/' .. r .. '/' end

local function unindex(k, r, oldkey)
  local p = repo_prefix(r)
  if k == 'm' then
    -- Another record of the same digest may own the entry now: only drop our own.
    if redis.call('HGET', p .. 'mrkey', oldkey) == rkey then
      redis.call('ZREM', p .. 'manifests', oldkey)
      redis.call('HDEL', p .. 'mrkey', oldkey)
    end
  elseif k == 't' then
    redis.call('ZREM', p .. 'tags', oldkey)
    redis.call('HDEL', p .. 'tagdigest', oldkey)
  else
    return
  end
  if redis.call('ZCARD', p .. 'manifests') == 0 and redis.call('ZCARD', p .. 'tags') == 0 then
    redis.call('ZREM', base .. 'repos', r)
  end
end

local function index(at)
  if kind ~= 'm' and kind ~= 't' then return end
  local p = repo_prefix(repo)
  local zset, hash = p .. 'tags', p .. 'tagdigest'
  if kind == 'm' then
    zset, hash = p .. 'manifests', p .. 'mrkey'
    redis.call('ZADD', zset, at, key)
    redis.call('HSET', hash, key, rkey)
  else
    redis.call('ZADD', zset, at, key)
    redis.call('HSET', hash, key, ARGV[11])
  end
  redis.call('EXPIRE', zset, ttl)
  redis.call('EXPIRE', hash, ttl)
  -- GT: a repository's score only moves forward; a new repository is added as is.
  if redis.call('ZADD', base .. 'repos', 'GT', at, repo) == 1 then
    redis.call('SADD', keyset, base .. 'repos', p .. 'manifests', p .. 'mrkey', p .. 'tags',
               p .. 'tagdigest')
  end
  redis.call('EXPIRE', base .. 'repos', ttl)
end

local had = cur[2] and cur[4] ~= '1'
local moved = not had or op == 'del' or cur[2] ~= repo or cur[3] ~= key or cur[5] ~= kind
if had and moved then unindex(cur[5], cur[2], cur[3]) end

if op == 'del' then
  redis.call('DEL', rk)
  if had then
    redis.call('HSET', rk, 'rev', rev, 'del', '1', 'repo', cur[2], 'key', cur[3], 'kind', cur[5])
  else
    redis.call('HSET', rk, 'rev', rev, 'del', '1')
  end
else
  redis.call('HSET', rk, 'rev', rev, 'cid', ARGV[7], 'val', ARGV[8], 'repo', repo, 'key', key,
             'digest', ARGV[11], 'at', ARGV[12], 'kind', kind, 'del', '0',
             'prepo', had and cur[2] or '', 'pkey', had and cur[3] or '',
             'pkind', had and cur[5] or '')
  index(ARGV[12])
end
redis.call('EXPIRE', rk, ttl)
if not cur[1] then redis.call('SADD', keyset, rk) end
-- The purge set must outlive every key it lists.
redis.call('EXPIRE', keyset, ttl)
if had then return {1, cur[2], cur[3], cur[5], 0} end
return {1, false, false, false, 0}
