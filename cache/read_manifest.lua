-- One manifest by tag or digest, for io.atcr.repo.getManifest (appview/reads.c). Read only.
-- KEYS[1] P{D}/recs; ARGV: 1 base "P{D}/", 2 repository, 3 reference, 4 "t" when the
-- reference is a tag, "d" when it is a digest, 5 "h" when the caller wants P{D}/id's handle
-- Returns {complete, known, handle, found, digest, rkey, cid, record JSON}: complete, known and
-- handle as in read_list.lua; found 1 when the manifest record is cached (then the rest follow).
local recs, base, repo, ref = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local complete = redis.call('EXISTS', base .. 'complete')
local known = complete
if known == 0 then known = redis.call('EXISTS', recs, base .. 'id') > 0 and 1 or 0 end
local handle = ''
if ARGV[5] == 'h' then handle = redis.call('HGET', base .. 'id', 'handle') or '' end
local head = {complete, known, handle, 0}

local digest = ref
if ARGV[4] == 't' then
  digest = redis.call('HGET', recs, 't/' .. repo .. '/' .. ref)
  if not digest then return head end
end
local rkey = redis.call('HGET', recs, 'm/' .. repo .. '/' .. digest)
if not rkey then return head end
local rec = redis.call('HGET', recs, 'io.atcr.manifest/' .. rkey)
if not rec then return head end
local nl = string.find(rec, '\n', 1, true)
if not nl then return head end
local kind, rrepo, _, _, _, cid = string.match(string.sub(rec, 1, nl - 1),
                                               '^%S+ (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
if kind ~= 'm' or rrepo ~= repo then return head end
head[4] = 1
head[5] = digest
head[6] = rkey
head[7] = cid ~= '-' and cid or ''
head[8] = string.sub(rec, nl + 1)
return head
