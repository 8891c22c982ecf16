-- Which holds serve a repository, for io.atcr.repo.getStats (appview/stats.c). Read only.
-- KEYS[1] P{D}/recs; ARGV: 1 base "P{D}/", 2 repository
-- Returns {complete, manifests, source, n, hold_1..hold_n, field, value, ...}: complete 1 when
-- P{D}/complete exists; manifests the number of live manifest records; source the first
-- org.opencontainers.image.source annotation seen ('' if none); the holds as "d:<did>" (holdDid,
-- or a hold that reported counts: P{D}/repo/<R>/holds) or "e:<url>" (deprecated holdEndpoint);
-- then the last known per-hold counts, P{D}/repo/<R>/holdstats as field/value pairs.
local base, repo = ARGV[1], ARGV[2]
local complete = redis.call('EXISTS', base .. 'complete')
local seen, holds, source, live = {}, {}, '', 0
local function add(h)
  if not seen[h] then
    seen[h] = true
    holds[#holds + 1] = h
  end
end
-- The manifests zset's members are "G X": the records are io.atcr.manifest/X, read in one call.
local names = {}
for _, m in ipairs(redis.call('ZRANGE', base .. 'repo/' .. repo .. '/manifests', 0, 999)) do
  local x = string.match(m, ' (%S+)$')
  if x then names[#names + 1] = 'io.atcr.manifest/' .. x end
end
local recs = #names > 0 and redis.call('HMGET', KEYS[1], unpack(names)) or {}
for i = 1, #names do
  local rec = recs[i]
  local nl = rec and string.find(rec, '\n', 1, true)
  local kind, rrepo
  if nl then kind, rrepo = string.match(rec, '^%S+ (%S+) (%S+)') end
  if kind == 'm' and rrepo == repo then
    live = live + 1
    local ok, v = pcall(cjson.decode, string.sub(rec, nl + 1))
    if ok and type(v) == 'table' then
      if type(v.holdDid) == 'string' then add('d:' .. v.holdDid)
      elseif type(v.holdEndpoint) == 'string' then add('e:' .. v.holdEndpoint) end
      local a = v.annotations
      if source == '' and type(a) == 'table' and type(a['org.opencontainers.image.source']) == 'string' then
        source = a['org.opencontainers.image.source']
      end
    end
  end
end
for _, h in ipairs(redis.call('SMEMBERS', base .. 'repo/' .. repo .. '/holds')) do add('d:' .. h) end
local out = {complete, live, source, #holds}
for _, h in ipairs(holds) do out[#out + 1] = h end
for _, x in ipairs(redis.call('HGETALL', base .. 'repo/' .. repo .. '/holdstats')) do out[#out + 1] = x end
return out
