//! The Lua scripts that change room membership and placement atomically in Redis, each one
//! announcing its change to the nodes concerned in the same step.

/// Admits a member: `KEYS` members, info; `ARGV` identity, node, max peers, mode for a new room,
/// room name, channel prefix, last_seq of a resume ("" for a join), the node to serve a new SFU
/// room, whether the member can use an SFU ("1"/"0", "" keeps what is recorded), and for `auto`
/// rooms the member count at which a mesh room moves to the SFU ("" never). Returns `{"full"}`
/// or `{"ok", mode, home, identity1, node1, ...}` (the other members; `home` is the node whose
/// SFU serves the room). Placement and the move to the SFU are decided here, once: concurrent
/// first joins on several nodes all get the same home, and a move is announced (`k = "o"`) to
/// the other members' nodes before the join that caused it.
///
/// The info hash holds the room's `mode`, `home`, and `c:<identity>` = "1" for each member that
/// can use an SFU.
pub(super) const JOIN: &str = r#"
local id, node, max, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local prev = redis.call('HGET', KEYS[1], id)
if not prev and redis.call('HLEN', KEYS[1]) >= max then return {'full'} end
local rmode = redis.call('HGET', KEYS[2], 'mode')
local home = redis.call('HGET', KEYS[2], 'home')
if not rmode then
  rmode, home = mode, ARGV[8]
  redis.call('HSET', KEYS[2], 'mode', mode, 'home', home)
end
local moved = false
if rmode == 'mesh' and not prev and ARGV[10] ~= '' and ARGV[9] == '1' then
  local ids = redis.call('HKEYS', KEYS[1])
  if #ids >= tonumber(ARGV[10]) then
    moved = true
    for _, m in ipairs(ids) do
      if redis.call('HGET', KEYS[2], 'c:' .. m) ~= '1' then moved = false break end
    end
  end
  if moved then
    rmode, home = 'sfu', ARGV[8]
    redis.call('HSET', KEYS[2], 'mode', rmode, 'home', home)
  end
end
if ARGV[9] == '1' then
  redis.call('HSET', KEYS[2], 'c:' .. id, '1')
elseif ARGV[9] == '0' then
  redis.call('HDEL', KEYS[2], 'c:' .. id)
end
redis.call('HSET', KEYS[1], id, node)
local all = redis.call('HGETALL', KEYS[1])
local out, nodes = {'ok', rmode, home}, {}
for k = 1, #all, 2 do
  if all[k] ~= id then
    out[#out + 1] = all[k]
    out[#out + 1] = all[k + 1]
    if all[k + 1] ~= node then nodes[all[k + 1]] = true end
  end
end
if prev and prev ~= node then nodes[prev] = true end
local note = {k = 'j', r = ARGV[5], i = id, n = node}
if ARGV[7] ~= '' then note.after = tonumber(ARGV[7]) end
local msg = cjson.encode(note)
local move = cjson.encode({k = 'o', r = ARGV[5], mode = rmode, h = home})
for n, _ in pairs(nodes) do
  if moved then redis.call('PUBLISH', ARGV[6] .. n, move) end
  redis.call('PUBLISH', ARGV[6] .. n, msg)
end
return out
"#;

/// Ends a membership if it is still `node`'s: `KEYS` members, info; `ARGV` identity, node, room,
/// channel prefix, reason ("" or "node_lost"). Returns 1 when it ended one.
pub(super) const LEAVE: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'c:' .. ARGV[1])
local rest = redis.call('HVALS', KEYS[1])
if #rest == 0 then redis.call('DEL', KEYS[2]) end
local nodes = {}
for _, n in ipairs(rest) do if n ~= ARGV[2] then nodes[n] = true end end
local note = {k = 'l', r = ARGV[3], i = ARGV[1], n = ARGV[2]}
if ARGV[5] ~= '' then note.why = ARGV[5] end
local msg = cjson.encode(note)
for n, _ in pairs(nodes) do redis.call('PUBLISH', ARGV[4] .. n, msg) end
return 1
"#;

/// Ends every membership of a dead node in one room: `KEYS` members, info; `ARGV` dead node,
/// room, channel prefix. Returns how many it ended.
pub(super) const REAP: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local gone, nodes = {}, {}
for k = 1, #all, 2 do
  if all[k + 1] == ARGV[1] then gone[#gone + 1] = all[k] else nodes[all[k + 1]] = true end
end
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], 'c:' .. id)
end
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
for _, id in ipairs(gone) do
  local msg = cjson.encode({k = 'l', r = ARGV[2], i = id, n = ARGV[1], why = 'node_lost'})
  for n, _ in pairs(nodes) do redis.call('PUBLISH', ARGV[3] .. n, msg) end
end
return #gone
"#;

/// Moves an SFU room off a dead node: `KEYS` info; `ARGV` dead node, proposed node. Returns the
/// room's node afterwards (nil when the room no longer exists).
pub(super) const REHOME: &str = r#"
local home = redis.call('HGET', KEYS[1], 'home')
if home == ARGV[1] then
  redis.call('HSET', KEYS[1], 'home', ARGV[2])
  return ARGV[2]
end
return home
"#;
