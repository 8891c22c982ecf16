-- The XRPC reads (appview/reads.c): one page of a list, or one manifest. Read only.
-- KEYS[1] the key read: P{D}/repos, P{D}/repo/<R>/tags, P recent, or P{D}/recs (manifest)
-- ARGV: 1 mode "repos"|"tags"|"recent"|"manifest", 2 base "P{D}/" ("" for recent),
--       3 count (page size + 1, so the caller knows whether a next page exists), 4 cursor score
--       ("" for the first page), 5 cursor member, 6 repository (tags, manifest), 7 "h" when the
--       caller wants P{D}/id's handle, 8 "a" to have page and extra as arrays rather than
--       packed (below), 9 manifest: the reference, 10 manifest: "t" tag or "d" digest
-- Lists return {complete, known, handle, found, #page, page, #extra, extra}: complete is 1 when
-- P{D}/complete exists, known 1 when anything of D is cached, handle P{D}/id's handle ("" when
-- none or not asked for), found 1 when the list exists (repos: a repository is listed), page
-- the entries' {member, score, ...}, extra what each entry needs besides:
--   repos {latest digest or "", tag count, manifest count, updatedAt as written},
--   tags {digest or "", createdAt as written, state}, recent nothing.
-- page and extra are each packed into one string, joined by newlines: a reply of a few strings
-- costs the appview far less than one of a few dozen. No value written by the fold holds a
-- newline; the counts let the caller see if one did, and ask again with ARGV[8] = "a".
-- The manifest mode returns {complete, known, handle, state, digest, rkey, cid, record, target}:
-- state "f" found (the rest follow), "d" known to be deleted, "u" a tag whose manifest record
-- the index has not seen (target: its rkey), "" unknown.
-- A tag's state: "r" resolved, "d" dangling (its manifest was deleted, or is of another
-- repository), "u" unresolved (its manifest record not seen: the index is partial).
-- Order is score descending, then member descending, and a cursor continues strictly after its
-- (score, member), so a walk is stable while nothing changes.
local key, mode, base = KEYS[1], ARGV[1], ARGV[2]
local n, cs, cm, repo = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local recs = base .. 'recs'

local function pack(t)
  if ARGV[8] == 'a' then return t end
  return table.concat(t, '\n')
end

-- A stored record's header words (see cache/SCHEMA.md): kind, repository, key, target, at,
-- or nil for a tombstone or anything else.
local function header(v)
  if not v then return nil end
  local kind, r, k, target, at = string.match(v, '^%S+ (%S+) (%S+) (%S+) (%S+) (%S+) %S+\n')
  if not kind or kind == '-' then return nil end
  return kind, r, k, target, at
end

-- The live manifest record of digest g in the repository: the one m/R/G names, else any the
-- manifests zset holds ("G X" members; a scan, only when the hint's record has gone). r/X
-- says what a record is. Returns its rkey, or nil, and whether the index knew the digest.
local function manifest_of_digest(g)
  local rkey = redis.call('HGET', recs, 'm/' .. repo .. '/' .. g)
  if not rkey then return nil, false end
  local want = repo .. ' ' .. g
  if redis.call('HGET', recs, 'r/' .. rkey) == want then return rkey, true end
  local zset = base .. 'repo/' .. repo .. '/manifests'
  local cursor = '0'
  repeat
    local page = redis.call('ZSCAN', zset, cursor, 'MATCH', g .. ' *', 'COUNT', 1000)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      local x = string.sub(page[2][i], #g + 2)
      if redis.call('HGET', recs, 'r/' .. x) == want then return x, true end
    end
  until cursor == '0'
  return nil, true
end

-- A tag's hint t/R/T, "Y at X=G", split (plain finds: a pattern costs this script far more):
-- at, and the manifest rkey X and digest G it points at, nil for a part written '-'.
local function hint(h)
  if not h then return nil end
  local s1 = string.find(h, ' ', 1, true)
  local s2 = s1 and string.find(h, ' ', s1 + 1, true)
  local eq = s2 and string.find(h, '=', s2 + 1, true)
  if not eq then return nil end
  local x, g = string.sub(h, s2 + 1, eq - 1), string.sub(h, eq + 1)
  return string.sub(h, s1 + 1, s2 - 1), x ~= '-' and x or nil, g ~= '-' and g or nil
end

-- What a tag points at, given its manifest rkey x and deprecated digest g (nil when absent),
-- what that record is (r/X: "R G", "-" deleted, nil not seen) and whether the index is
-- complete: state, digest. The at-uri decides: the digest of the record it names, or nothing
-- when that record was deleted, or is absent from a complete index. The deprecated
-- manifestDigest is used for a tag without an at-uri, and while the index is partial and has
-- not seen the record.
local function resolve(x, g, what, complete)
  if x then
    if what then
      local sp = string.find(what, ' ', 1, true)
      if sp and string.sub(what, 1, sp - 1) == repo then return 'r', string.sub(what, sp + 1) end
      return 'd', '' -- deleted, or not a manifest of this repository
    end
    if complete == 1 then return 'd', '' end
  end
  if g then return 'r', g end
  return 'u', ''
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

local complete = redis.call('EXISTS', base .. 'complete')
local known = complete
if known == 0 then known = redis.call('EXISTS', recs, base .. 'id') > 0 and 1 or 0 end
local handle = ''
if ARGV[7] == 'h' then handle = redis.call('HGET', base .. 'id', 'handle') or '' end

if mode == 'manifest' then
  local ref, head = ARGV[9], {complete, known, handle}
  local state, digest, rkey, value, target = '', '', nil, nil, ''
  if ARGV[10] == 'd' then
    local found
    rkey, found = manifest_of_digest(ref)
    digest = ref
    state = rkey and 'f' or (found and 'd' or '')
  else
    local t = redis.call('HGET', recs, 't/' .. repo .. '/' .. ref)
    if t then
      local live = redis.call('ZSCORE', base .. 'repo/' .. repo .. '/tags', ref)
      local _, mrkey, mdigest = hint(t)
      if not live then
        state = 'd' -- the tag was deleted
      else
        local mwhat = mrkey and redis.call('HGET', recs, 'r/' .. mrkey)
        local s, g = resolve(mrkey, mdigest, mwhat or nil, complete)
        if s == 'r' then
          if mwhat then
            rkey, digest, state = mrkey, g, 'f'
          else
            local found
            rkey, found = manifest_of_digest(g)
            digest = g
            state = rkey and 'f' or (found and 'd' or '')
          end
        elseif s == 'd' then
          state = 'd'
        else
          state, target = 'u', mrkey or ''
        end
      end
    end
  end
  head[4] = state
  if state == 'f' then value = redis.call('HGET', recs, 'io.atcr.manifest/' .. rkey) end
  if state == 'f' and not (value and string.find(value, '\n', 1, true)) then
    state = '' -- r/X without its record: not written by the fold
  end
  head[4] = state
  if state == 'f' then
    local nl = string.find(value, '\n', 1, true)
    local cid = string.match(string.sub(value, 1, nl - 1), '(%S+)$')
    head[5], head[6], head[7], head[8] = digest, rkey, cid ~= '-' and cid or '', string.sub(value, nl + 1)
  else
    head[5], head[6], head[7], head[8] = '', '', '', ''
  end
  head[9] = state == 'u' and target or ''
  return head
end

-- The repositories with entries, as {name, updatedAt score string, as a number, newest manifest
-- member, key prefix, newest tag}, newest first. Ordering them costs two calls per repository,
-- so only the newest 500 a DID created are considered: a DID with more cannot make one read
-- stall Valkey for long.
local MAX_REPOSITORIES = 500
local function repositories()
  local rows = {}
  for _, r in ipairs(redis.call('ZREVRANGE', key, 0, MAX_REPOSITORIES - 1)) do
    local p = base .. 'repo/' .. r .. '/'
    local m = redis.call('ZREVRANGE', p .. 'manifests', 0, 0, 'WITHSCORES')
    local t = redis.call('ZREVRANGE', p .. 'tags', 0, 0, 'WITHSCORES')
    local at, newest_tag = m[2], nil
    if t[2] and (not at or tonumber(t[2]) > tonumber(at)) then at, newest_tag = t[2], t[1] end
    if at then rows[#rows + 1] = {r, at, tonumber(at), m[1] or '', p, newest_tag} end
  end
  table.sort(rows, function(a, b)
    if a[3] ~= b[3] then return a[3] > b[3] end
    return a[1] > b[1]
  end)
  return rows
end

-- A repository's updatedAt as written: the createdAt of its newest manifest or tag record.
local function updated_at(row)
  if row[6] then
    return (hint(redis.call('HGET', recs, 't/' .. row[1] .. '/' .. row[6]) or nil)) or ''
  end
  local x = string.match(row[4], ' (%S+)$')
  local _, _, _, _, at = header(x and redis.call('HGET', recs, 'io.atcr.manifest/' .. x))
  return at or ''
end

-- One page of repositories after the cursor, and their extras.
local function repos_page(rows)
  local items, extra, csn = {}, {}, tonumber(cs)
  for _, row in ipairs(rows) do
    if #items >= 2 * n then break end
    if cs == '' or row[3] < csn or (row[3] == csn and row[1] < cm) then
      items[#items + 1] = row[1]
      items[#items + 1] = row[2]
      extra[#extra + 1] = string.match(row[4], '^(%S+)') or ''
      extra[#extra + 1] = tostring(redis.call('ZCARD', row[5] .. 'tags'))
      extra[#extra + 1] = tostring(redis.call('ZCARD', row[5] .. 'manifests'))
      extra[#extra + 1] = updated_at(row)
    end
  end
  return items, extra
end

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

-- Each tag of the page: t/R/T says what it points at, its manifest record what digest that is.
local extra = {}
if #items > 0 then
  local fields, prefix = {}, 't/' .. repo .. '/'
  for i = 1, #items / 2 do fields[i] = prefix .. items[2 * i - 1] end
  local hints = redis.call('HMGET', recs, unpack(fields))
  local ats, xs, gs, rfields = {}, {}, {}, {}
  for i = 1, #hints do
    ats[i], xs[i], gs[i] = hint(hints[i] or nil)
    if xs[i] then rfields[#rfields + 1] = 'r/' .. xs[i] end
  end
  local whats = #rfields > 0 and redis.call('HMGET', recs, unpack(rfields)) or {}
  local j = 0
  for i = 1, #hints do
    local what
    if xs[i] then
      j = j + 1
      what = whats[j] or nil
    end
    local s, g = resolve(xs[i], gs[i], what, complete)
    extra[#extra + 1] = g
    extra[#extra + 1] = ats[i] or ''
    extra[#extra + 1] = s
  end
end
return {complete, known, handle, found, #items, pack(items), #extra, pack(extra)}
