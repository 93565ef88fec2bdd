-- Decides and applies one batch of records atomically (its types: src/schema/redis.rs;
-- the rules: DESIGN.md, "Outcomes").
-- KEYS (RedisKeys::script_keys): see the `local ... = unpack(KEYS)` line below.
-- ARGV[1]: JSON Decide {ranges = [{field, prev, first, last}], records = [{i, v?, b, a, r, k, t, p, o}],
--          opens?, closes?, dedup}: every record of the batch that carries a vote, in batch order;
--          p is the index (1-based) of the record's range, o its offset, k its rank in millionths,
--          t its receive time in ms.
-- ARGV[2]: the approximate number of entries the logs_tail stream is capped at
-- ARGV[3]: the records' log items (JSON objects), one per line, in the order of `records`
-- Returns (ApplyReply) {'ok', total, decided, outcomes} | {'gap', field, stored}
--   decided: how many records were decided now (the others, in a replay, are told again).
--   outcomes: one letter per record: c counted, x changed, d duplicate, l late.
-- The keys by name, in the order of RedisKeys::script_keys.
local total, by_band, by_album, by_route, rank_sum_by_album, rank_avg_by_album, timeline, offsets, logs_tail, received, by_outcome, voters_total, voters_seen, ratings, votes_seen, seen_sweep, outcomes = unpack(KEYS)
local a = cjson.decode(ARGV[1])
local stored = {}
for n, r in ipairs(a.ranges) do
  local s = tonumber(redis.call('HGET', offsets, r.field) or '-1')
  if s < r.prev then
    -- Redis has not seen the records just before this batch: it lost data.
    return {'gap', r.field, tostring(s)}
  end
  stored[n] = s
end
local opens, closes, dedup = a.opens, a.closes, a.dedup
local names = {c = 'counted', x = 'changed', d = 'duplicate', l = 'late'}
local letters, tail = {}, {}
local band, album, rank, route, outcome = {}, {}, {}, {}, {c = 0, x = 0, d = 0, l = 0}
local new_total, decided, new_voters, max_t = 0, 0, 0, 0
local items = string.gmatch(ARGV[3], '[^\n]+')
local function add(t, k, v) t[k] = (t[k] or 0) + v end
-- Many fields or members per call (a few thousand arguments at most, within Lua's stack).
local PER_CALL = 1000
local function each_part(list, f)
  for i = 1, #list, PER_CALL do f({unpack(list, i, math.min(i + PER_CALL - 1, #list))}) end
end
-- field -> value (false when absent) of `fields` of hash `key`, in a few HMGET calls.
local function hmget(key, fields)
  local got = {}
  each_part(fields, function(part)
    local values = redis.call('HMGET', key, unpack(part))
    for j = 1, #part do got[part[j]] = values[j] end
  end)
  return got
end
-- Writes field -> value of `map` into hash `key`, in a few HSET calls.
local function hset_all(key, map)
  local args = {}
  for f, v in pairs(map) do
    args[#args + 1] = f
    args[#args + 1] = v
  end
  for i = 1, #args, 2 * PER_CALL do
    redis.call('HSET', key, unpack(args, i, math.min(i + 2 * PER_CALL - 1, #args)))
  end
end
-- Every decided record's letter, kept in `outcomes` in chunks of CHUNK offsets per partition
-- (field "<topic>/<partition>#<offset div CHUNK>", one character per offset, '-' or nothing for
-- none), so a replay tells each record's outcome exactly, forever. A chunk is read once per batch
-- and written back once: its stored string with the letters this batch set spliced in.
local CHUNK = 1024
local chunks = {}
local function chunk_of(r)
  local index = math.floor(r.o / CHUNK)
  local of_range = chunks[r.p]
  if not of_range then
    of_range = {}
    chunks[r.p] = of_range
  end
  local c = of_range[index]
  if not c then
    local name = a.ranges[r.p].field .. '#' .. index
    c = {name = name, stored = redis.call('HGET', outcomes, name) or '', set = {}}
    of_range[index] = c
  end
  return c, (r.o % CHUNK) + 1
end
local function letter_at(c, at)
  local letter = c.set[at] or string.sub(c.stored, at, at)
  if letter == '' then return '-' end
  return letter
end
-- What the records to decide need, read up front: the remembered vote ids and the voters'
-- ratings; what this batch decides goes into seen_now / rated_now (read first) and is written
-- back after the loop, a few calls in all rather than several per record.
local ids, rating_keys = {}, {}
for _, r in ipairs(a.records) do
  if r.o > stored[r.p] then
    ids[#ids + 1] = r.i
    if r.v then
      r.key = r.v .. '\n' .. r.a
      rating_keys[#rating_keys + 1] = r.key
    end
  end
end
local seen_before, rated_before = hmget(votes_seen, ids), hmget(ratings, rating_keys)
local seen_now, rated_now, new_voter_names = {}, {}, {}
local mid = {}
for n, r in ipairs(a.ranges) do mid[n] = ' ' .. r.field .. ' ' end
for n, r in ipairs(a.records) do
  local item = items()
  local letter
  if r.o <= stored[r.p] then
    -- Decided before (a replay): tell what was decided, change nothing.
    letter = letter_at(chunk_of(r))
    -- None stored: counted by a consumer from before outcomes, which counted every record.
    if letter == '-' then letter = 'c' end
  else
    if r.t > max_t then max_t = r.t end
    local seen = seen_now[r.i] or seen_before[r.i]
    local seen_at = seen and tonumber(string.match(seen, '^(%d+)'))
    if seen_at and r.t - seen_at <= dedup then
      letter = 'd'
    elseif (opens and r.t < opens) or (closes and r.t >= closes) then
      letter = 'l'
    elseif r.v then
      local old = rated_now[r.key] or rated_before[r.key]
      rated_now[r.key] = r.k
      if old then
        letter = 'x'
        add(rank, r.a, r.k - tonumber(old))
      else
        letter = 'c'
        new_voter_names[#new_voter_names + 1] = r.v
      end
    else
      letter = 'c'
    end
    if letter == 'c' then
      add(band, r.b, 1)
      add(album, r.a, 1)
      add(rank, r.a, r.k)
      new_total = new_total + 1
    end
    if letter == 'c' or letter == 'x' then
      seen_now[r.i] = r.t .. mid[r.p] .. r.o .. ' ' .. letter
    end
    local c, at = chunk_of(r)
    c.set[at] = letter
    c.lo, c.hi = math.min(c.lo or at, at), math.max(c.hi or at, at)
    outcome[letter] = outcome[letter] + 1
    add(route, r.r, 1)
    decided = decided + 1
    tail[#tail + 1] = '{"outcome":"' .. names[letter] .. '",' .. string.sub(item, 2)
  end
  letters[n] = letter
end
hset_all(ratings, rated_now)
hset_all(votes_seen, seen_now)
each_part(new_voter_names, function(part)
  new_voters = new_voters + redis.call('SADD', voters_seen, unpack(part))
end)
for n, r in ipairs(a.ranges) do
  if r.last > stored[n] then redis.call('HSET', offsets, r.field, r.last) end
end
for _, of_range in pairs(chunks) do
  for _, c in pairs(of_range) do
    if c.lo then
      local parts = {string.sub(c.stored, 1, c.lo - 1) .. string.rep('-', c.lo - 1 - #c.stored)}
      for at = c.lo, c.hi do parts[#parts + 1] = letter_at(c, at) end
      parts[#parts + 1] = string.sub(c.stored, c.hi + 1)
      redis.call('HSET', outcomes, c.name, table.concat(parts))
    end
  end
end
local now_total = redis.call('INCRBY', total, new_total)
if decided > 0 then
  for k, v in pairs(band) do redis.call('HINCRBY', by_band, k, v) end
  for k, v in pairs(route) do redis.call('HINCRBY', by_route, k, v) end
  for k, v in pairs(rank) do
    local count = tonumber(redis.call('HINCRBY', by_album, k, album[k] or 0))
    local sum = tonumber(redis.call('HINCRBY', rank_sum_by_album, k, string.format('%d', v)))
    redis.call('HSET', rank_avg_by_album, k, string.format('%.2f', sum / count / 1000000))
  end
  for l, v in pairs(outcome) do
    if v > 0 then redis.call('HINCRBY', by_outcome, names[l], v) end
  end
  local now_received = redis.call('INCRBY', received, decided)
  if new_voters > 0 then redis.call('INCRBY', voters_total, new_voters) end
  redis.call('XADD', timeline, 'MAXLEN', '~', '10000', '*', 'total', now_total, 'delta', new_total,
    'received', now_received, 'counted', outcome.c, 'changed', outcome.x, 'duplicate', outcome.d, 'late', outcome.l)
  -- The live page's tail: the newly decided records once, in batch order, one entry per batch,
  -- under the field LOGS_TAIL_FIELD names.
  redis.call('XADD', logs_tail, 'MAXLEN', '~', ARGV[2], '*', 'logs', '[' .. table.concat(tail, ',') .. ']')
  -- Forget, a little per batch, the vote ids received long before the newest record: twice the
  -- window, so that records of a partition read behind the others are still judged by their own window.
  local sweep = redis.call('HMGET', seen_sweep, 'cursor', 'newest')
  local newest = math.max(tonumber(sweep[2] or '0'), max_t)
  local next = redis.call('HSCAN', votes_seen, sweep[1] or '0', 'COUNT', 64)
  local fields = next[2]
  for f = 1, #fields, 2 do
    local at = tonumber(string.match(fields[f + 1], '^(%d+)'))
    if at and at < newest - 2 * dedup then redis.call('HDEL', votes_seen, fields[f]) end
  end
  redis.call('HSET', seen_sweep, 'cursor', next[1], 'newest', string.format('%d', newest))
end
return {'ok', tostring(now_total), tostring(decided), table.concat(letters)}
