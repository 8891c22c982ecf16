-- Removes a purged DID's entries from the recent list (the other half of a purge: see
-- cache/purge.lua). Its entries ("D R G X createdAt") are found by a scan for "D ": the list
-- holds at most its newest 10,000, and purges are rare. Idempotent, like the purge: a replay
-- runs both again.
-- KEYS[1] P recent; ARGV[1] D. Returns the number of entries removed.
local recent, removed, cursor = KEYS[1], 0, '0'
repeat
  local page = redis.call('ZSCAN', recent, cursor, 'MATCH', ARGV[1] .. ' *', 'COUNT', 1000)
  cursor = page[1]
  for i = 1, #page[2], 2 do removed = removed + redis.call('ZREM', recent, page[2][i]) end
until cursor == '0'
return removed
