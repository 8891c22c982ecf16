-- Clears outbox entries (see apply.lua) whose change was applied to the recent list, unless a
-- newer change of the same member replaced them meanwhile.
-- KEYS[1] P{D}/outbox; ARGV: member, change, member, change, ...
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
