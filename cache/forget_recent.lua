-- Removes a purged DID's entries from the recent list (the other half of a purge: see
-- cache/purge.lua). Its entries ("D R G X createdAt") are found in P recent/by-did, which holds
-- every member of P recent with score 0 (and maybe members it lost since: see
-- cache/trim_recent.lua): ZRANGEBYLEX from "D " up to "D!" (the character after the space) is
-- exactly the members that start with "D ". Idempotent, like the purge: a replay runs both
-- again.
-- KEYS[1] P recent, KEYS[2] P recent/by-did; ARGV[1] D. Returns the number of entries removed.
local recent, index, did = KEYS[1], KEYS[2], ARGV[1]
local removed = 0
local members = redis.call('ZRANGEBYLEX', index, '[' .. did .. ' ', '(' .. did .. '!')
for i = 1, #members, 1000 do -- a thousand members a ZREM: Lua's unpack has a limit
  local j = math.min(i + 999, #members)
  removed = removed + redis.call('ZREM', recent, unpack(members, i, j))
  redis.call('ZREM', index, unpack(members, i, j))
end
return removed
