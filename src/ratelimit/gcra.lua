-- GCRA (the generic cell rate algorithm) over one or more buckets, atomically
-- (docs/operations.md#rate-limits). Each bucket is one key holding its theoretical
-- arrival time (TAT) in microseconds of Redis's own clock, so every process sharing
-- this Redis shares the bucket and no process clock matters.
--
-- KEYS[i]: the bucket's key. ARGV, four per bucket:
--   emission  microseconds one request costs (period / count)
--   burst     requests allowed at once
--   penalty   0: a refused request costs nothing, and the request is taken only if
--             every bucket allows it; > 0: the request is always recorded (auth
--             failures), refused ones too, up to this many microseconds of extra delay
--             (the growing delay of a client that keeps trying)
--   unused    reserved, 0
-- Returns {allowed, then per bucket: allowed, remaining, retry_after_us, reset_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local allowed = 1
local out = {}
local tats = {}
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local emission = tonumber(ARGV[a + 1])
  local burst = tonumber(ARGV[a + 2])
  local penalty = tonumber(ARGV[a + 3])
  local tolerance = emission * burst
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then
    tat = now
  end
  local new_tat = tat + emission
  local allow_at = new_tat - tolerance
  if now < allow_at then
    allowed = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = allow_at - now
    out[#out + 1] = tat - now
    if penalty > 0 then
      tats[i] = math.min(new_tat, now + tolerance + penalty)
    else
      tats[i] = false
    end
  else
    out[#out + 1] = 1
    out[#out + 1] = math.floor((now - allow_at) / emission)
    out[#out + 1] = 0
    out[#out + 1] = new_tat - now
    tats[i] = new_tat
  end
end
for i = 1, #KEYS do
  local penalty = tonumber(ARGV[(i - 1) * 4 + 3])
  if tats[i] and (allowed == 1 or penalty > 0) then
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.floor((tats[i] - now) / 1000) + 1)
  end
end
table.insert(out, 1, allowed)
return out
