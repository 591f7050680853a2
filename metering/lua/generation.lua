-- One usage record by generation id: the generation's key holds the record's stream entry id
-- (a key written before records were stored once holds the record itself).
-- KEYS[1] generation  KEYS[2] usage stream
-- Returns the record's JSON, or false when it is unknown or past its retention.
local held = redis.call('GET', KEYS[1])
if not held then return false end
if string.sub(held, 1, 1) == '{' then return held end
local entries = redis.call('XRANGE', KEYS[2], held, held)
if #entries == 0 then return false end
local fields = entries[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'r' then return fields[i + 1] end
end
return false
