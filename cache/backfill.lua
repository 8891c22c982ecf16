-- The backfill's progress (appview/backfill.c; the keys: "Backfill" in cache/SCHEMA.md). Each
-- change of a pass is one call, so a crash between two calls leaves the one or the other, never
-- half of either: a DID is in exactly one of todo, done and failed, and a page's DIDs are queued
-- with the cursor that follows them.
-- KEYS: 1 P backfill{bf} (hash), 2 P backfill{bf}:todo (set), 3 P backfill{bf}:done (set),
--       4 P backfill{bf}:failed (hash DID -> "attempts failed_at_ms reason"),
--       5 P backfill{bf}:tries (hash DID -> "attempts failed_at_ms reason": a queued DID's
--         failed attempts so far, so a restart does not give it its attempts again)
-- ARGV: 1 op, 2 pass id, then by op:
--   new     3 reason, 4 source, 5 now ms: forgets the last pass (and a pending request)
--   page    3 collection, 4 the cursor after this page ("" once the collection is exhausted),
--           5.. the DIDs it listed: those neither done nor failed join todo
--   done    3 DID, 4 records listed: it leaves todo for done
--   attempt 3 DID, 4 "attempts failed_at_ms reason": an attempt failed, the DID stays queued
--   fail    3 DID, 4 "attempts failed_at_ms reason": it leaves todo for failed
--   scan    3 SSCAN cursor of todo, 4 COUNT: returns {next cursor, DIDs, their tries (false
--           when none)} instead of the counters
--   finish  3 now ms, 4 when failed DIDs are due again (ms): only once todo is empty; done is
--           dropped (a finished pass lists nothing more)
--   retry   the failed DIDs go back to todo and the pass runs again
--   counts  nothing: only the counters
-- Returns 0 when ARGV[2] is not the pass P backfill names (a newer pass replaced it, or the
-- prefix was flushed): nothing was written. Else {found, done, failed, queued, records}, and for
-- finish a sixth: 1 when the pass finished, 0 when DIDs were still queued.
local state, todo, done, failed, tries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, pass = ARGV[1], ARGV[2]

local function counts(extra)
  local c = redis.call('HMGET', state, 'found', 'done', 'records')
  local out = {tonumber(c[1]) or 0, tonumber(c[2]) or 0, redis.call('HLEN', failed),
               redis.call('SCARD', todo), tonumber(c[3]) or 0}
  if extra then out[6] = extra end
  return out
end

if op == 'new' then
  redis.call('DEL', state, todo, done, failed, tries)
  redis.call('HSET', state, 'pass', pass, 'state', 'running', 'reason', ARGV[3],
             'source', ARGV[4], 'started', ARGV[5], 'found', 0, 'done', 0, 'records', 0,
             'retries', 0)
  return counts()
end
if redis.call('HGET', state, 'pass') ~= pass then return 0 end

if op == 'page' then
  local added = 0
  for i = 5, #ARGV do
    local did = ARGV[i]
    if redis.call('SISMEMBER', done, did) == 0 and redis.call('HEXISTS', failed, did) == 0 then
      added = added + redis.call('SADD', todo, did)
    end
  end
  redis.call('HINCRBY', state, 'found', added)
  if ARGV[4] == '' then
    redis.call('HSET', state, 'listed:' .. ARGV[3], '1')
    redis.call('HDEL', state, 'cursor:' .. ARGV[3])
  else
    redis.call('HSET', state, 'cursor:' .. ARGV[3], ARGV[4])
  end
elseif op == 'scan' then
  local page = redis.call('SSCAN', todo, ARGV[3], 'COUNT', ARGV[4])
  local dids = page[2]
  local known = {}
  if #dids > 0 then known = redis.call('HMGET', tries, unpack(dids)) end
  return {page[1], dids, known}
elseif op == 'attempt' then
  if redis.call('SISMEMBER', todo, ARGV[3]) == 1 then redis.call('HSET', tries, ARGV[3], ARGV[4]) end
elseif op == 'done' then
  redis.call('HDEL', tries, ARGV[3])
  if redis.call('SREM', todo, ARGV[3]) == 1 then
    redis.call('SADD', done, ARGV[3])
    redis.call('HINCRBY', state, 'done', 1)
    redis.call('HINCRBY', state, 'records', ARGV[4])
  end
elseif op == 'fail' then
  redis.call('HDEL', tries, ARGV[3])
  if redis.call('SREM', todo, ARGV[3]) == 1 then redis.call('HSET', failed, ARGV[3], ARGV[4]) end
elseif op == 'finish' then
  if redis.call('SCARD', todo) > 0 then return counts(0) end
  redis.call('DEL', done)
  redis.call('HSET', state, 'state', 'finished', 'finished', ARGV[3])
  if redis.call('HLEN', failed) > 0 then redis.call('HSET', state, 'retry_at', ARGV[4]) end
  return counts(1)
elseif op == 'retry' then
  local dids = redis.call('HKEYS', failed)
  for _, did in ipairs(dids) do redis.call('SADD', todo, did) end
  redis.call('DEL', failed, tries)
  redis.call('HSET', state, 'state', 'running')
  redis.call('HDEL', state, 'retry_at', 'finished')
  redis.call('HINCRBY', state, 'retries', 1)
end
return counts()
