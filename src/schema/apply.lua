-- Applies one pre-aggregated batch atomically (its types: src/schema/redis.rs).
-- KEYS (RedisKeys::script_keys): total, by_band, by_album, by_route, rank_sum, rank_avg, timeline, offsets, logs_tail
-- ARGV[1]: JSON Deltas {ranges = [{field, prev, first, last}, ...], total, band, album, route, rank}
-- ARGV[2]: the approximate number of entries the logs_tail stream is capped at
-- ARGV[3]: the newly counted votes as one JSON array of log items (stored as is)
-- Returns (ApplyReply) {'ok', total} | {'adjust', field, stored, ...} | {'gap', field, stored}
-- The keys by name, in the order of RedisKeys::script_keys.
local total, by_band, by_album, by_route, rank_sum_by_album, rank_avg_by_album, timeline, offsets, logs_tail = unpack(KEYS)
local a = cjson.decode(ARGV[1])
local adjust = {}
for _, r in ipairs(a.ranges) do
  local stored = tonumber(redis.call('HGET', offsets, r.field) or '-1')
  if stored < r.prev then
    -- Redis has not seen the records just before this batch: it lost data.
    return {'gap', r.field, tostring(stored)}
  end
  if stored >= r.first then
    -- Some records were counted before (a replay): the caller drops them and retries.
    table.insert(adjust, r.field)
    table.insert(adjust, tostring(stored))
  end
end
if #adjust > 0 then
  table.insert(adjust, 1, 'adjust')
  return adjust
end
for _, r in ipairs(a.ranges) do
  redis.call('HSET', offsets, r.field, r.last)
end
local new_total = redis.call('INCRBY', total, a.total)
if a.total > 0 then
  for k, v in pairs(a.band) do redis.call('HINCRBY', by_band, k, v) end
  for k, v in pairs(a.route) do redis.call('HINCRBY', by_route, k, v) end
  for k, v in pairs(a.album) do
    local count = redis.call('HINCRBY', by_album, k, v)
    local sum = tonumber(redis.call('HINCRBYFLOAT', rank_sum_by_album, k, a.rank[k]))
    redis.call('HSET', rank_avg_by_album, k, string.format('%.2f', sum / count))
  end
  redis.call('XADD', timeline, 'MAXLEN', '~', '10000', '*', 'total', new_total, 'delta', a.total)
  -- The live page's tail: the newly counted votes once, in batch order, one entry per batch,
  -- under the field LOGS_TAIL_FIELD names.
  redis.call('XADD', logs_tail, 'MAXLEN', '~', ARGV[2], '*', 'logs', ARGV[3])
end
return {'ok', tostring(new_total)}
