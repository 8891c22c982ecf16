-- Folds one record event into the index (see cache/SCHEMA.md). Atomic, and idempotent: an
-- event whose rev is not newer than what is stored (record or tombstone) changes nothing.
-- KEYS[1] P{D}/recs, KEYS[2] P recent
-- ARGV: 1 base "P{D}/", 2 field "<collection>/<rkey>", 3 op "put"|"del", 4 rev,
--       5 time_us (0: not from the firehose), 6 ttl, 7 kind "m"|"t"|"s", 8 cid, 9 record JSON,
--       10 repository, 11 key (digest, tag or hold DID), 12 digest the tag points at,
--       13 createdAt ms, 14 rkey, 15 D, 16 "1" to trim the recent list to its newest N, 17 N
-- Returns 1 when the event changed the index, 0 when it was not newer.
--
-- This runs for every indexed event, so it does as few calls as it can: a record, its
-- digest/tag mapping and the DID's other string values share one hash (one TTL refresh, and a
-- purge is one DEL); the purge mark is read only when the record is absent (a purged DID has
-- no records: whatever exists was written after the purge, by a later rev); only an event that
-- moves a record (another repository, key or kind, or a delete) removes index entries.
local recs, recent, base, field = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local op, rev, time_us, ttl = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local kind, repo, key, rkey, did = ARGV[7], ARGV[10], ARGV[11], ARGV[14], ARGV[15]

-- ~rev: the newest rev of D the firehose brought, applied or not (a PDS listing, time_us 0,
-- leaves it). The ingester decides from it which creates are new (cache/SCHEMA.md).
local got = redis.call('HMGET', recs, field, '~rev')
local cur = got[1]
local raise = time_us > 0 and (not got[2] or rev > got[2])
local crev, ckind, crepo, ckey
if cur then
  crev, ckind, crepo, ckey = string.match(cur, '^(%S+) (%S+) (%S+) (%S+)')
  if crev and crev >= rev then
    if raise then redis.call('HSET', recs, '~rev', rev) end
    return 0
  end
else
  local gone = redis.call('GET', base .. 'gone')
  if gone and time_us > 0 and time_us <= tonumber(gone) then return 0 end
end

local function repo_prefix(r) return base .. 'repo/' .. r .. '/' end

local function unindex(k, r, oldkey)
  local p = repo_prefix(r)
  if k == 'm' then
    -- Another record of the same digest may own the entry now: only drop our own.
    local owner = 'm/' .. r .. '/' .. oldkey
    if redis.call('HGET', recs, owner) ~= rkey then return end
    redis.call('HDEL', recs, owner)
    redis.call('ZREM', p .. 'manifests', oldkey)
    redis.call('ZREM', recent, did .. ' ' .. r .. ' ' .. oldkey)
  elseif k == 't' then
    redis.call('HDEL', recs, 't/' .. r .. '/' .. oldkey)
    redis.call('ZREM', p .. 'tags', oldkey)
  end
end

-- Returns the mapping field and value the record's hash entry brings along.
local function index(at)
  if kind ~= 'm' and kind ~= 't' then return end
  local p = repo_prefix(repo)
  local zset, map, value = p .. 'tags', 't/' .. repo .. '/' .. key, ARGV[12]
  if kind == 'm' then
    zset, map, value = p .. 'manifests', 'm/' .. repo .. '/' .. key, rkey
    redis.call('ZADD', recent, at, did .. ' ' .. repo .. ' ' .. key)
    if ARGV[16] == '1' then redis.call('ZREMRANGEBYRANK', recent, 0, -tonumber(ARGV[17]) - 1) end
  end
  redis.call('ZADD', zset, at, key)
  redis.call('EXPIRE', zset, ttl)
  -- repos names the repositories; reads take their order from the repository's zsets.
  redis.call('ZADD', base .. 'repos', 'NX', at, repo)
  redis.call('EXPIRE', base .. 'repos', ttl)
  return map, value
end

local had = ckind and ckind ~= '-'
local moved = not had or op == 'del' or crepo ~= repo or ckey ~= key or ckind ~= kind
if had and moved then unindex(ckind, crepo, ckey) end

-- The record, its mapping, and ~rev when this one is newer.
local fields = {recs, field}
if op == 'del' then
  fields[3] = rev .. ' - - - - - -'
else
  local at = ARGV[13]
  local head = table.concat({rev, kind, repo, key, ARGV[12] ~= '' and ARGV[12] or '-', at,
                             ARGV[8] ~= '' and ARGV[8] or '-'}, ' ')
  fields[3] = head .. '\n' .. ARGV[9]
  local map, value = index(at)
  if map then fields[4], fields[5] = map, value end
end
if raise then
  fields[#fields + 1] = '~rev'
  fields[#fields + 1] = rev
end
redis.call('HSET', unpack(fields))
redis.call('EXPIRE', recs, ttl)
return 1
