-- A room's batch: the next ids, the history stream, the shard channel, in one step.
-- KEYS: the room's counter, history stream and channel (one hash tag, one slot).
-- ARGV: the stream's length (approximate trim), then per item its priority letter and
-- its JSON before and after the id.
local n = (#ARGV - 1) / 3
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
local out = {'i' .. first .. ' ' .. last}
for i = 0, n - 1 do
  local id = first + i
  local p = ARGV[2 + 3 * i]
  local item = ARGV[3 + 3 * i] .. id .. ARGV[4 + 3 * i]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id .. '-0', 'i', item, 'p', p)
  out[#out + 1] = p .. item
end
redis.call('SPUBLISH', KEYS[3], table.concat(out, '\n'))
return first
