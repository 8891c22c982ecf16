-- One page of a list, newest first, for the XRPC reads (appview/reads.c). Read only.
-- KEYS[1] the zset listed: P{D}/repos, P{D}/repo/<R>/tags, or P recent
-- ARGV: 1 mode "repos"|"tags"|"recent", 2 base "P{D}/" ("" for recent), 3 count (page size + 1,
--       so the caller knows whether a next page exists), 4 cursor score ("" for the first page),
--       5 cursor member, 6 repository (tags only)
-- The order is score descending, then member descending (ZREVRANGEBYSCORE's order), and a
-- cursor continues strictly after its (score, member), so a walk is stable while nothing changes.
-- Returns {complete, known, handle, found, items...} where complete is 1 when P{D}/complete
-- exists, known 1 when anything of D is cached, handle is P{D}/id's handle ("" when none), found
-- 1 when the list exists; items per entry: repos {name, score, latest digest or "", tag count,
-- manifest count}, tags {tag, score, digest}, recent {member, score}.
local key, mode, base = KEYS[1], ARGV[1], ARGV[2]
local n, cs, cm = tonumber(ARGV[3]), ARGV[4], ARGV[5]

local function page()
  if cs == '' then return redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES') end
  local out, off, skipping, csn = {}, 0, true, tonumber(cs)
  while #out < 2 * n do
    local r = redis.call('ZREVRANGEBYSCORE', key, cs, '-inf', 'WITHSCORES', 'LIMIT', off, n)
    if #r == 0 then break end
    for i = 1, #r, 2 do
      -- Entries tied with the cursor's score come first in member-descending order; those at or
      -- above the cursor's member were on earlier pages.
      local seen = skipping and tonumber(r[i + 1]) == csn and r[i] >= cm
      if not seen then
        skipping = false
        out[#out + 1] = r[i]
        out[#out + 1] = r[i + 1]
        if #out >= 2 * n then break end
      end
    end
    off = off + #r / 2
  end
  return out
end

local head
if mode == 'recent' then
  head = {1, 1, '', 1}
else
  local complete = redis.call('EXISTS', base .. 'complete')
  local known = complete
  if known == 0 then known = redis.call('EXISTS', base .. 'recs', base .. 'id') > 0 and 1 or 0 end
  local found = redis.call('EXISTS', key)
  head = {complete, known, redis.call('HGET', base .. 'id', 'handle') or '', found}
end

local items = page()
if mode == 'recent' then
  for i = 1, #items do head[#head + 1] = items[i] end
elseif mode == 'tags' then
  local tags = {}
  for i = 1, #items, 2 do tags[#tags + 1] = items[i] end
  local digests = {}
  if #tags > 0 then
    local fields = {}
    for i = 1, #tags do fields[i] = 't/' .. ARGV[6] .. '/' .. tags[i] end
    digests = redis.call('HMGET', base .. 'recs', unpack(fields))
  end
  for i = 1, #tags do
    head[#head + 1] = tags[i]
    head[#head + 1] = items[2 * i]
    head[#head + 1] = digests[i] or ''
  end
else
  for i = 1, #items, 2 do
    local r = base .. 'repo/' .. items[i] .. '/'
    local latest = redis.call('ZREVRANGE', r .. 'manifests', 0, 0)
    head[#head + 1] = items[i]
    head[#head + 1] = items[i + 1]
    head[#head + 1] = latest[1] or ''
    head[#head + 1] = redis.call('ZCARD', r .. 'tags')
    head[#head + 1] = redis.call('ZCARD', r .. 'manifests')
  end
end
return head
