-- A room's batch: the next ids, the history stream, the shard channel, in one step.
-- KEYS: the room's counter, history stream and channel (one hash tag, one slot).
-- ARGV: the stream's length (approximate trim), the last id the posting node has seen
-- (the counter is put back to it if Redis lost its data, so ids never go backwards), then
-- per item its priority letter and its JSON before and after the id.
local n = (#ARGV - 2) / 3
local floor = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') < floor then
  redis.call('SET', KEYS[1], floor)
end
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local out = {'i' .. first .. ' ' .. last}
for i = 0, n - 1 do
  local id = first + i
  local p = ARGV[3 + 3 * i]
  local item = ARGV[4 + 3 * i] .. id .. ARGV[5 + 3 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 'i', item, 'p', p)
  out[#out + 1] = p .. item
end
redis.call('SPUBLISH', KEYS[3], table.concat(out, '\n'))
return first
