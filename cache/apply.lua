-- Folds one record event into the index (see cache/SCHEMA.md). Atomic, and idempotent: an
-- event whose rev is not newer than what is stored (record or tombstone) changes nothing.
-- KEYS[1] record key P{D}/rec/<collection>/<rkey>
-- ARGV: 1 base "P{D}/", 2 op "put"|"del", 3 rev, 4 time_us (0: not from the firehose),
--       5 ttl, 6 kind "m"|"t"|"s", 7 cid, 8 record JSON, 9 repository, 10 key (digest or tag),
--       11 digest the tag points at, 12 createdAt ms, 13 rkey, 14 D, 15 outbox ttl
-- Returns {applied, member, change, member, change, ...}: changes of the recent list (below).
--
-- The global recent list lives outside this DID's slot, so this script cannot change it.
-- It writes the change it wants ("+<score>" to add, "-" to remove a "D R G" member) into the
-- DID's outbox P{D}/outbox, atomically with the record, and returns it. The caller applies
-- the changes, then clears the ones still unchanged (outbox_done.lua). A crash in between
-- loses nothing: the changes stay in the outbox, and an event that does not apply (which is
-- what a replay after a crash is) returns the whole outbox, so the replay drives them again.
--
-- This runs for every indexed event, so it does as few calls as it can: the purge mark is
-- read only when the record is absent (a purged DID has no records: whatever exists was
-- written after the purge, by a later rev), keys join the purge set only when they are new,
-- and an update that keeps its repository and key leaves the index entries where they are.
local rk, base = KEYS[1], ARGV[1]
local op, rev, time_us, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local kind, repo, key, rkey, did = ARGV[6], ARGV[9], ARGV[10], ARGV[13], ARGV[14]
local keyset, outbox = base .. 'keys', base .. 'outbox'
local mine = {1}

local function owe(member, change)
  redis.call('HSET', outbox, member, change)
  mine[#mine + 1] = member
  mine[#mine + 1] = change
end

local function not_applied()
  local out = redis.call('HGETALL', outbox)
  table.insert(out, 1, 0)
  return out
end

local cur = redis.call('HMGET', rk, 'rev', 'repo', 'key', 'del', 'kind')
if not cur[1] then
  local gone = redis.call('GET', base .. 'gone')
  if gone and time_us > 0 and time_us <= tonumber(gone) then return not_applied() end
elseif cur[1] >= rev then
  return not_applied()
end

local function repo_prefix(r) return base .. 'repo/' .. r .. '/' end

local function unindex(k, r, oldkey)
  local p = repo_prefix(r)
  if k == 'm' then
    -- Another record of the same digest may own the entry now: only drop our own.
    if redis.call('HGET', p .. 'mrkey', oldkey) == rkey then
      redis.call('ZREM', p .. 'manifests', oldkey)
      redis.call('HDEL', p .. 'mrkey', oldkey)
      owe(did .. ' ' .. r .. ' ' .. oldkey, '-')
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
    owe(did .. ' ' .. repo .. ' ' .. key, '+' .. at)
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
  redis.call('HSET', rk, 'rev', rev, 'del', '1')
else
  redis.call('HSET', rk, 'rev', rev, 'cid', ARGV[7], 'val', ARGV[8], 'repo', repo, 'key', key,
             'digest', ARGV[11], 'at', ARGV[12], 'kind', kind, 'del', '0')
  index(ARGV[12])
end
redis.call('EXPIRE', rk, ttl)
if not cur[1] then redis.call('SADD', keyset, rk) end
-- The purge set must outlive every key it lists.
redis.call('EXPIRE', keyset, ttl)
if redis.call('EXISTS', outbox) == 1 then redis.call('EXPIRE', outbox, ARGV[15]) end
return mine
