-- One manifest by tag or digest, for io.atcr.repo.getManifest (appview/reads.c). Read only.
-- KEYS[1] P{D}/repo/<R>/mrkey; ARGV: 1 base "P{D}/", 2 repository, 3 reference, 4 "t" when the
-- reference is a tag, "d" when it is a digest
-- Returns {complete, known, handle, found, digest, rkey, cid, record JSON}: complete, known and
-- handle as in read_list.lua; found 1 when the manifest record is cached (then the rest follow).
local base, repo, ref = ARGV[1], ARGV[2], ARGV[3]
local complete = redis.call('EXISTS', base .. 'complete')
local known = complete
if known == 0 then known = redis.call('EXISTS', base .. 'keys', base .. 'id') > 0 and 1 or 0 end
local head = {complete, known, redis.call('HGET', base .. 'id', 'handle') or '', 0}

local digest = ref
if ARGV[4] == 't' then
  digest = redis.call('HGET', base .. 'repo/' .. repo .. '/tagdigest', ref)
  if not digest then return head end
end
local rkey = redis.call('HGET', KEYS[1], digest)
if not rkey then return head end
local rec = redis.call('HMGET', base .. 'rec/io.atcr.manifest/' .. rkey, 'del', 'repo', 'cid', 'val')
if rec[1] ~= '0' or rec[2] ~= repo or not rec[4] then return head end
head[4] = 1
head[5] = digest
head[6] = rkey
head[7] = rec[3] or ''
head[8] = rec[4]
return head
