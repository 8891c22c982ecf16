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
local rk, base = KEYS[1], ARGV[1]
local op, rev, time_us, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local kind, rkey = ARGV[6], ARGV[13]
local keyset = base .. 'keys'

local gone = redis.call('GET', base .. 'gone')
if gone and time_us > 0 and time_us <= tonumber(gone) then return {0, false, false, false, 0} end

local cur = redis.call('HMGET', rk, 'rev', 'repo', 'key', 'del', 'kind')
if cur[1] and cur[1] >= rev then
  if cur[1] ~= rev then return {0, false, false, false, 0} end
  if cur[4] == '1' then return {0, cur[2] or false, cur[3] or false, cur[5] or false, 1} end
  local prev = redis.call('HMGET', rk, 'prepo', 'pkey', 'pkind')
  return {0, prev[1] or false, prev[2] or false, prev[3] or false, 1}
end

local function touch(k)
  redis.call('EXPIRE', k, ttl)
  redis.call('SADD', keyset, k)
end

local function repo_prefix(repo) return base .. 'repo/' .. repo .. '/' end

local function unindex(k, repo, key)
  local r = repo_prefix(repo)
  if k == 'm' then
    -- Another record of the same digest may own the entry now: only drop our own.
    if redis.call('HGET', r .. 'mrkey', key) == rkey then
      redis.call('ZREM', r .. 'manifests', key)
      redis.call('HDEL', r .. 'mrkey', key)
    end
  elseif k == 't' then
    redis.call('ZREM', r .. 'tags', key)
    redis.call('HDEL', r .. 'tagdigest', key)
  else
    return
  end
  if redis.call('ZCARD', r .. 'manifests') == 0 and redis.call('ZCARD', r .. 'tags') == 0 then
    redis.call('ZREM', base .. 'repos', repo)
  end
end

local function index(repo, key, digest, at)
  local r = repo_prefix(repo)
  if kind == 'm' then
    redis.call('ZADD', r .. 'manifests', at, key)
    redis.call('HSET', r .. 'mrkey', key, rkey)
    touch(r .. 'manifests'); touch(r .. 'mrkey')
  elseif kind == 't' then
    redis.call('ZADD', r .. 'tags', at, key)
    redis.call('HSET', r .. 'tagdigest', key, digest)
    touch(r .. 'tags'); touch(r .. 'tagdigest')
  else
    return
  end
  -- GT: a repository's score only moves forward; a new repository is added as is.
  redis.call('ZADD', base .. 'repos', 'GT', at, repo)
  touch(base .. 'repos')
end

local had = cur[2] and cur[4] ~= '1'
if had then unindex(cur[5], cur[2], cur[3]) end

redis.call('DEL', rk)
if op == 'del' then
  if had then
    redis.call('HSET', rk, 'rev', rev, 'del', '1', 'repo', cur[2], 'key', cur[3], 'kind', cur[5])
  else
    redis.call('HSET', rk, 'rev', rev, 'del', '1')
  end
else
  redis.call('HSET', rk, 'rev', rev, 'cid', ARGV[7], 'val', ARGV[8], 'repo', ARGV[9],
             'key', ARGV[10], 'digest', ARGV[11], 'at', ARGV[12], 'kind', kind, 'del', '0')
  if had then redis.call('HSET', rk, 'prepo', cur[2], 'pkey', cur[3], 'pkind', cur[5]) end
  index(ARGV[9], ARGV[10], ARGV[11], ARGV[12])
end
touch(rk)
redis.call('EXPIRE', keyset, ttl)
if had then return {1, cur[2], cur[3], cur[5], 0} end
return {1, false, false, false, 0}
