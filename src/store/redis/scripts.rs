//! The Lua scripts of the Redis backend: each touches the keys of one slot.

/// Appends one room's items: `XADD` each, then `seq` = max(seq, largest id). An id that is
/// not above the stream's last is refused (another writer took it), unless the very same
/// item is stored under it: a call retried after a lost reply adds nothing twice.
/// KEYS: history, seq. ARGV: maxlen, then (id, item) pairs.
pub(super) const APPEND: &str = r#"
local maxs, max = nil, -1
for i = 2, #ARGV, 2 do
  local sid = ARGV[i] .. '-0'
  local r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], sid, 'i', ARGV[i + 1], 'p', 'p')
  if type(r) == 'table' and r.err then
    local same = false
    local e = redis.call('XRANGE', KEYS[1], sid, sid)
    if e[1] then
      local f = e[1][2]
      for j = 1, #f, 2 do
        if f[j] == 'i' and f[j + 1] == ARGV[i + 1] then same = true end
      end
    end
    if not same then
      return redis.error_reply('item ' .. ARGV[i] .. ' not stored: ' .. r.err)
    end
  end
  local id = tonumber(ARGV[i])
  if id > max then max, maxs = id, ARGV[i] end
end
if maxs then
  local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
  if max > seq then redis.call('SET', KEYS[2], maxs) end
end
return 1
"#;

/// Compare-and-set of one string key. KEYS: the key. ARGV: expected, new.
pub(super) const CAS: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Deletes a room's record, moderation and history (the last id stays, so a room id
/// reused later never repeats an item id); returns the record that was there.
/// KEYS: room, mods, history.
pub(super) const DELETE_ROOM: &str = r#"
local old = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return old
"#;

/// Revokes one token. KEYS: tokens, counts. ARGV: uid, jti, exp.
pub(super) const REVOKE_TOKEN: &str = r#"
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1] .. '\n' .. ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end
return 1
"#;

/// A user's mark, only ever moved forward. KEYS: users. ARGV: uid, not_before, until.
pub(super) const REVOKE_USER: &str = r#"
local nb, un = tonumber(ARGV[2]), tonumber(ARGV[3])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local a, b = string.match(old, '^(%d+) (%d+)$')
  if a and tonumber(a) > nb then nb = tonumber(a) end
  if b and tonumber(b) > un then un = tonumber(b) end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %d', nb, un))
return 1
"#;

/// Drops revocations expired at `now` (expiry ≤ now); how many. KEYS: tokens, counts,
/// users. ARGV: now.
pub(super) const SWEEP: &str = r#"
local now = tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, m in ipairs(gone) do
  local uid = string.match(m, '^([^\n]*)\n')
  if uid and redis.call('HINCRBY', KEYS[2], uid, -1) <= 0 then
    redis.call('HDEL', KEYS[2], uid)
  end
end
local n = #gone
if n > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local marks = redis.call('HGETALL', KEYS[3])
for i = 1, #marks, 2 do
  local un = tonumber(string.match(marks[i + 1], ' (%d+)$') or '0')
  if un <= now then
    redis.call('HDEL', KEYS[3], marks[i])
    n = n + 1
  end
end
return n
"#;
