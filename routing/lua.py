"""The Redis scripts behind shared limits and health. Each runs atomically on the server.

State per deployment (key names in ``schemas.keys.route_key``):

- ``window``: a sorted set with one member per admitted call, ``<id>|<tokens>|<admitted ms>``.
  While the call runs its score is ``admitted + lease`` (in the future: that is how calls in
  flight are counted, and how a crashed worker's slot frees itself when the lease ends); when
  it ends the score becomes the end time, so the call keeps counting against rpm and tpm until
  ``window`` after its answer (see ``routing.limits`` for why the end and not the start).
- ``tokens``: the sum of the tokens of the members in ``window`` (reserved, then actual).
- ``health``: a hash: ``open_until``/``probe_until`` (the circuit breaker), ``cool_until``
  (a 429 cooldown), ``streak``, ``win_*`` (the failure-rate window), ``latency`` (EWMA, ms),
  ``opened`` (how many times the breaker opened).
- ``slots``: the next start time given to a request that waits for capacity.
- ``seeded``: set once ``window`` holds what the database knew of the deployment's calls.
  It vanishes with the rest when Redis loses its data: ADMIT then answers "seed first" for a
  deployment with rpm or tpm limits, the worker reads the deployment's calls of the last
  window from the database, and SEED adds them once (whichever worker is first), so a Redis
  restart does not reopen a provider's window.

Times are milliseconds of the Redis server's clock (one clock for every worker host), unless
the caller passes ``now`` (tests do, to control time).
"""

from __future__ import annotations

__all__ = ["ADMIT", "PEEK", "SEED", "SETTLE"]

_PRELUDE = """
local function num(v) return tonumber(v) or 0 end
local function clock()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parts(m)
  local tokens, admitted = string.match(m, '|(%d+)|(%d+)$')
  return tonumber(tokens), tonumber(admitted)
end
local function sum_tokens(z, since)
  local total = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, since, '+inf')) do
    total = total + (parts(m))
  end
  return total
end
local now = clock()
"""

ADMIT = _PRELUDE + """
-- KEYS: window, tokens, health, slots, seeded of each candidate, in the strategy's order.
-- ARGV: now, member id, dry run (1/0), sort by ('', 'in_flight', 'latency'), then per
-- candidate: rpm, tpm, concurrency, window ms, tokens, lease ms, default latency ms.
-- Returns {index admitted or 0, wait ms, probe (1/0), member or kind, {{i, reason, ms}...}};
-- kind 'seed': the reasons name the rate-limited candidates whose window is to be seeded.
local id, dry, sort_by = ARGV[2], ARGV[3] == '1', ARGV[4]
local n = #KEYS / 5
local PROBE_RECHECK_MS = 1000
local function arg(i, j) return tonumber(ARGV[4 + (i - 1) * 7 + j]) end
local function key(i, j) return KEYS[(i - 1) * 5 + j] end

if not dry then
  local unseeded = {}
  for i = 1, n do
    if (arg(i, 1) > 0 or arg(i, 2) > 0) and redis.call('EXISTS', key(i, 5)) == 0 then
      table.insert(unseeded, {i, 'seed', 0})
    end
  end
  if #unseeded > 0 then return {0, 0, 0, 'seed', unseeded} end
end

local order = {}
for i = 1, n do order[i] = i end
if sort_by ~= '' then
  local rank = {}
  for i = 1, n do
    if sort_by == 'in_flight' then
      rank[i] = redis.call('ZCOUNT', key(i, 1), '(' .. now, '+inf')
    else
      rank[i] = tonumber(redis.call('HGET', key(i, 3), 'latency')) or -1
    end
  end
  table.sort(order, function(a, b)
    if rank[a] ~= rank[b] then return rank[a] < rank[b] end
    return a < b
  end)
end

local function used_tokens(i, since)
  local z, s = key(i, 1), key(i, 2)
  if dry then return sum_tokens(z, '(' .. since) end
  local v = tonumber(redis.call('GET', s))
  if v == nil or v < 0 then
    v = sum_tokens(z, '-inf')
    redis.call('SET', s, v)
  end
  return v
end

local function prune(i, since)
  local z, s = key(i, 1), key(i, 2)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', since)
  if #gone == 0 then return end
  local freed = 0
  for _, m in ipairs(gone) do freed = freed + (parts(m)) end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', since)
  if redis.call('EXISTS', s) == 1 then redis.call('DECRBY', s, freed) end
end

-- When a member stops counting: window after its end (a call in flight is expected to end
-- one typical latency after it started).
local function frees_at(member, score, win, lat)
  if score <= now then return score + win end
  local _, admitted = parts(member)
  return math.max(now, admitted + lat) + win
end

local function limits(i, lat)
  local rpm, tpm, conc, win, tokens = arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4), arg(i, 5)
  local z, since = key(i, 1), now - win
  if not dry then prune(i, since) end
  local wait, limit = 0, nil
  if rpm > 0 then
    local count = redis.call('ZCOUNT', z, '(' .. since, '+inf')
    if count >= rpm then
      local e = redis.call('ZRANGEBYSCORE', z, '(' .. since, '+inf', 'WITHSCORES', 'LIMIT',
                           count - rpm, 1)
      wait, limit = frees_at(e[1], tonumber(e[2]), win, lat) - now, 'rpm'
    end
  end
  if conc > 0 then
    local flying = redis.call('ZCOUNT', z, '(' .. now, '+inf')
    if flying >= conc then
      local e = redis.call('ZRANGEBYSCORE', z, '(' .. now, '+inf', 'LIMIT', flying - conc, 1)
      local _, admitted = parts(e[1])
      local w = admitted + lat - now
      if limit == nil or w > wait then wait, limit = w, 'concurrency' end
    end
  end
  if tpm > 0 then
    local used = used_tokens(i, since)
    if used + tokens > tpm then
      local need, freed, w = used + tokens - tpm, 0, win
      local es = redis.call('ZRANGEBYSCORE', z, '(' .. since, '+inf', 'WITHSCORES')
      for j = 1, #es, 2 do
        freed = freed + (parts(es[j]))
        if freed >= need then w = frees_at(es[j], tonumber(es[j + 1]), win, lat) - now; break end
      end
      if limit == nil or w > wait then wait, limit = w, 'tpm' end
    end
  end
  if limit == nil then return nil end
  local interval = 0
  if rpm > 0 then interval = win / rpm end
  if tpm > 0 then interval = math.max(interval, win * tokens / tpm) end
  if conc > 0 then interval = math.max(interval, lat / conc) end
  return limit, math.max(wait, 1), interval
end

-- 'ok', 0, probe | 'open'/'cooling'/'probing', wait | 'rpm'/'tpm'/'concurrency', wait, interval
local function check(i)
  local h = redis.call('HMGET', key(i, 3), 'open_until', 'cool_until', 'probe_until', 'latency')
  local open_until, cool_until, probe_until = num(h[1]), num(h[2]), num(h[3])
  if cool_until > now then return 'cooling', cool_until - now end
  if open_until > now then return 'open', open_until - now end
  local probe = open_until > 0
  if probe and probe_until > now then
    return 'probing', math.min(probe_until - now, PROBE_RECHECK_MS)
  end
  local limit, wait, interval = limits(i, tonumber(h[4]) or arg(i, 7))
  if limit then return limit, wait, interval end
  return 'ok', 0, probe and 1 or 0
end

local function admit(i, probe)
  local tokens, lease, win = arg(i, 5), arg(i, 6), arg(i, 4)
  local member = id .. '|' .. tokens .. '|' .. now
  redis.call('ZADD', key(i, 1), now + lease, member)
  redis.call('INCRBY', key(i, 2), tokens)
  redis.call('PEXPIRE', key(i, 1), win + lease + 60000)
  redis.call('PEXPIRE', key(i, 2), win + lease + 60000)
  if probe == 1 then redis.call('HSET', key(i, 3), 'probe_until', now + lease) end
  return member
end

local reasons = {}
local best, best_slot, best_interval, sick_wait
for _, i in ipairs(order) do
  local kind, wait, extra = check(i)
  if kind == 'ok' then
    local member = ''
    if not dry then member = admit(i, extra) end
    return {i, 0, extra, member, reasons}
  end
  table.insert(reasons, {i, kind, math.floor(wait)})
  if extra ~= nil then
    local slot = math.max(num(redis.call('GET', key(i, 4))), now + wait)
    if best_slot == nil or slot < best_slot then best, best_slot, best_interval = i, slot, extra end
  elseif sick_wait == nil or wait < sick_wait then
    sick_wait = wait
  end
end
if best ~= nil then
  if not dry then
    local next_slot = best_slot + best_interval
    redis.call('SET', key(best, 4), next_slot, 'PX', math.floor(next_slot - now + arg(best, 4)))
  end
  return {0, math.floor(best_slot - now), 0, 'saturated', reasons}
end
return {0, math.floor(sick_wait or 0), 0, 'unhealthy', reasons}
"""

SETTLE = _PRELUDE + """
-- KEYS: window, tokens, health of one deployment.
-- ARGV: now, member, actual tokens, keep in window (1/0), window ms, verdict (ok, fail,
-- throttled, neutral, void), latency ms (0: none), probe (1/0), cooldown after a 429 ms,
-- consecutive failures, failure rate, min calls, failure window ms, breaker cooldown ms,
-- latency alpha, health ttl ms.
-- Returns 1 when this report opened the breaker, else 0.
local z, s, h, member = KEYS[1], KEYS[2], KEYS[3], ARGV[2]
if redis.call('ZREM', z, member) == 1 then
  local reserved, admitted = parts(member)
  redis.call('DECRBY', s, reserved)
  if ARGV[4] == '1' then
    local used = tonumber(ARGV[3])
    local base = string.match(member, '^(.*)|%d+|%d+$')
    redis.call('ZADD', z, now, base .. '|' .. used .. '|' .. admitted)
    redis.call('INCRBY', s, used)
  end
  local ttl = tonumber(ARGV[5]) + 60000
  redis.call('PEXPIRE', z, ttl)
  redis.call('PEXPIRE', s, ttl)
end

local verdict, probe = ARGV[6], ARGV[8] == '1'
if verdict == 'void' then
  if probe then redis.call('HSET', h, 'probe_until', 0) end
  return 0
end
local f = redis.call('HMGET', h, 'open_until', 'win_start', 'win_calls', 'win_fails')
local open_until, win_start, calls, fails = num(f[1]), num(f[2]), num(f[3]), num(f[4])
if now - win_start >= tonumber(ARGV[13]) then win_start, calls, fails = now, 0, 0 end
local opened = 0
if verdict == 'throttled' then
  local cool_until = now + tonumber(ARGV[9])
  if cool_until > num(redis.call('HGET', h, 'cool_until')) then
    redis.call('HSET', h, 'cool_until', cool_until)
  end
  if probe then redis.call('HSET', h, 'probe_until', 0) end
elseif verdict == 'fail' then
  calls, fails = calls + 1, fails + 1
  local streak = redis.call('HINCRBY', h, 'streak', 1)
  local tripped = streak >= tonumber(ARGV[10])
    or (calls >= tonumber(ARGV[12]) and fails / calls >= tonumber(ARGV[11]))
  if probe or (open_until == 0 and tripped) then
    redis.call('HSET', h, 'open_until', now + tonumber(ARGV[14]), 'probe_until', 0, 'streak', 0)
    redis.call('HINCRBY', h, 'opened', 1)
    win_start, calls, fails, opened = now, 0, 0, 1
  end
else
  calls = calls + 1
  redis.call('HSET', h, 'streak', 0)
  if probe then redis.call('HSET', h, 'open_until', 0, 'probe_until', 0) end
  local x = tonumber(ARGV[7])
  if verdict == 'ok' and x > 0 then
    local alpha, old = tonumber(ARGV[15]), tonumber(redis.call('HGET', h, 'latency'))
    if old then x = alpha * x + (1 - alpha) * old end
    redis.call('HSET', h, 'latency', x)
  end
end
redis.call('HSET', h, 'win_start', win_start, 'win_calls', calls, 'win_fails', fails)
redis.call('PEXPIRE', h, tonumber(ARGV[16]))
return opened
"""

PEEK = _PRELUDE + """
-- KEYS: window, tokens, health, slots of each deployment. ARGV: now, then window ms of each.
-- Returns {now, {in flight, requests in window, tokens in window, latency ms (-1: none),
-- open_until, cool_until, probe_until, next slot, streak, opened} per deployment}. Read only.
local out = {}
for i = 1, #KEYS / 4 do
  local z, h = KEYS[(i - 1) * 4 + 1], KEYS[(i - 1) * 4 + 3]
  local since = '(' .. (now - tonumber(ARGV[1 + i]))
  local f = redis.call('HMGET', h, 'latency', 'open_until', 'cool_until', 'probe_until',
                       'streak', 'opened')
  out[i] = {
    redis.call('ZCOUNT', z, '(' .. now, '+inf'), redis.call('ZCOUNT', z, since, '+inf'),
    sum_tokens(z, since), math.floor(tonumber(f[1]) or -1), num(f[2]), num(f[3]), num(f[4]),
    math.floor(num(redis.call('GET', KEYS[(i - 1) * 4 + 4]))), num(f[5]), num(f[6]),
  }
end
return {now, out}
"""

SEED = _PRELUDE + """
-- KEYS: window, tokens, seeded of one deployment. ARGV: now, window ms, then pairs (member,
-- score ms): the calls the database saw answered within the last window.
-- Adds them once (0: another worker was first); the token sum is recomputed from the window.
if not redis.call('SET', KEYS[3], now, 'NX') then return 0 end
for i = 3, #ARGV, 2 do redis.call('ZADD', KEYS[1], tonumber(ARGV[i + 1]), ARGV[i]) end
if #ARGV > 2 then
  local ttl = tonumber(ARGV[2]) + 60000
  redis.call('SET', KEYS[2], sum_tokens(KEYS[1], '-inf'), 'PX', ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""
