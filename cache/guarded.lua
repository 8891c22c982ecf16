-- Runs a planned write only if the fields it was planned from still hold what was read: compare
-- and set, for a writer of the index that is not alone (the loader, beside the ingester). The
-- fold's rules are not here: appview/plan.c decides what to write; this only checks and runs it.
-- KEYS: every key the commands write; KEYS[1] is P{D}/recs, which holds the guarded fields
--       (with no guards, any key: the call only runs its commands, as one step).
-- ARGV: 1 g, then g guards (field, expected): expected "" when the field must be absent, "=v"
--       when its value must be v, else a rev that its value must start with ("<rev> ..."); then
--       the commands, each as its argument count followed by its arguments.
-- Returns 1 when the commands ran, 0 when a guard failed (nothing was written).
local recs, g, i = KEYS[1], tonumber(ARGV[1]), 2
for _ = 1, g do
  local field, want = ARGV[i], ARGV[i + 1]
  i = i + 2
  local v = redis.call('HGET', recs, field)
  if want == '' then
    if v then return 0 end
  elseif string.sub(want, 1, 1) == '=' then
    if v ~= string.sub(want, 2) then return 0 end
  elseif not v or string.sub(v, 1, #want + 1) ~= want .. ' ' then
    return 0
  end
end
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
