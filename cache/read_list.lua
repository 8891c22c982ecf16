-- One page of a list, newest first, for the XRPC reads (appview/reads.c). Read only.
-- KEYS[1] the zset listed: P{D}/repos, P{D}/repo/<R>/tags, or P recent
-- ARGV: 1 mode "repos"|"tags"|"recent", 2 base "P{D}/" ("" for recent), 3 count (page size + 1,
--       so the caller knows whether a next page exists), 4 cursor score ("" for the first page),
--       5 cursor member, 6 repository (tags only), 7 "h" when the caller wants P{D}/id's handle,
--       8 "a" to have page and extra as arrays rather than packed (below)
-- The order is score descending, then member descending (ZREVRANGEBYSCORE's order), and a
-- cursor continues strictly after its (score, member), so a walk is stable while nothing changes.
-- A repository's score is not the one in P{D}/repos (which only names them) but its updatedAt:
-- the createdAt of the newest entry of its manifests and tags. A repository with neither (all
-- its entries removed, or expired) is not listed.
-- Returns {complete, known, handle, found, #page, page, #extra, extra} where complete is 1 when
-- P{D}/complete exists, known 1 when anything of D is cached, handle is P{D}/id's handle (""
-- when none or not asked for), found 1 when the list exists (for repos: a repository is
-- listed), page the entries' strings
-- {member, score, ...}, and extra the strings each entry needs besides: tags {digest the tag
-- points at, "" when none}, repos {latest digest or "", tag count, manifest count}, recent none.
-- page and extra are each packed into one string, joined by newlines: a reply of a few strings
-- costs the appview far less than one of a few dozen. No value written by the fold contains a
-- newline; the counts let the caller see if one did, and ask again with ARGV[8] = "a".
-- This script runs for every list read: it calls Valkey as few times as it can (a complete
-- index needs no `known`, a first page tells `found` by itself).
local key, mode, base = KEYS[1], ARGV[1], ARGV[2]
local n, cs, cm = tonumber(ARGV[3]), ARGV[4], ARGV[5]

local function pack(t)
  if ARGV[8] == 'a' then return t end
  return table.concat(t, '\n')
end

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

if mode == 'recent' then
  local items = page()
  return {1, 1, '', 1, #items, pack(items), 0, pack({})}
end

-- The repositories with entries, as {name, updatedAt string, as a number, latest digest,
-- key prefix}, newest first. Ordering them costs two calls per repository, so only the newest
-- 500 a DID created are considered: a DID with more cannot make one read stall Valkey for long.
local MAX_REPOSITORIES = 500
local function repositories()
  local rows = {}
  for _, r in ipairs(redis.call('ZREVRANGE', key, 0, MAX_REPOSITORIES - 1)) do
    local p = base .. 'repo/' .. r .. '/'
    local m = redis.call('ZREVRANGE', p .. 'manifests', 0, 0, 'WITHSCORES')
    local t = redis.call('ZREVRANGE', p .. 'tags', 0, 0, 'WITHSCORES')
    local at = m[2]
    if t[2] and (not at or tonumber(t[2]) > tonumber(at)) then at = t[2] end
    if at then rows[#rows + 1] = {r, at, tonumber(at), m[1] or '', p} end
  end
  table.sort(rows, function(a, b)
    if a[3] ~= b[3] then return a[3] > b[3] end
    return a[1] > b[1]
  end)
  return rows
end

-- One page of repositories after the cursor, and their extras.
local function repos_page(rows)
  local items, extra, csn = {}, {}, tonumber(cs)
  for _, row in ipairs(rows) do
    if #items >= 2 * n then break end
    if cs == '' or row[3] < csn or (row[3] == csn and row[1] < cm) then
      items[#items + 1] = row[1]
      items[#items + 1] = row[2]
      extra[#extra + 1] = row[4]
      extra[#extra + 1] = tostring(redis.call('ZCARD', row[5] .. 'tags'))
      extra[#extra + 1] = tostring(redis.call('ZCARD', row[5] .. 'manifests'))
    end
  end
  return items, extra
end

local complete = redis.call('EXISTS', base .. 'complete')
local known = complete
if known == 0 then known = redis.call('EXISTS', base .. 'recs', base .. 'id') > 0 and 1 or 0 end
local handle = ''
if ARGV[7] == 'h' then handle = redis.call('HGET', base .. 'id', 'handle') or '' end
if mode == 'repos' then
  local rows = repositories()
  local items, extra = repos_page(rows)
  return {complete, known, handle, #rows > 0 and 1 or 0, #items, pack(items), #extra, pack(extra)}
end

local items = page()
-- A zset that exists has members, so a first page is empty only when the list does not exist.
local found
if cs == '' then
  found = #items > 0 and 1 or 0
else
  found = redis.call('EXISTS', key)
end

local extra = {}
if #items > 0 then
  local fields, prefix = {}, 't/' .. ARGV[6] .. '/'
  for i = 1, #items / 2 do fields[i] = prefix .. items[2 * i - 1] end
  extra = redis.call('HMGET', base .. 'recs', unpack(fields))
  for i = 1, #extra do extra[i] = extra[i] or '' end
end
return {complete, known, handle, found, #items, pack(items), #extra, pack(extra)}
