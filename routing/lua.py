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
-- Admits one or more calls with the same candidates, one after another, as that many runs of
-- the script would (a worker groups the admissions it makes in one loop iteration).
-- KEYS: window, tokens, health, slots, seeded of each candidate, in the strategy's order.
-- ARGV: now, dry run (1/0), sort by ('', 'in_flight', 'latency'), then per candidate: rpm,
-- tpm, concurrency, window ms, lease ms, default latency ms; then per call: member id, tokens.
-- Returns one reply per call: {index admitted or 0, wait ms, probe (1/0), member or kind,
-- {{i, reason, ms}...}}; kind 'seed': the reasons name the rate-limited candidates whose
-- window is to be seeded (nothing was admitted).
local dry, sort_by = ARGV[2] == '1', ARGV[3]
local n = #KEYS / 5
local first_call = 4 + n * 6
local PROBE_RECHECK_MS = 1000
local function arg(i, j) return tonumber(ARGV[3 + (i - 1) * 6 + j]) end
local function key(i, j) return KEYS[(i - 1) * 5 + j] end

if not dry then
  local unseeded = {}
  for i = 1, n do
    if (arg(i, 1) > 0 or arg(i, 2) > 0) and redis.call('EXISTS', key(i, 5)) == 0 then
      table.insert(unseeded, {i, 'seed', 0})
    end
  end
  if #unseeded > 0 then
    local replies = {}
    for c = first_call, #ARGV, 2 do table.insert(replies, {0, 0, 0, 'seed', unseeded}) end
    return replies
  end
end

local function ranked()
  local order = {}
  for i = 1, n do order[i] = i end
  if sort_by == '' then return order end
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
  return order
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

-- Members that stopped counting leave the window (once a run: the clock does not move).
local pruned = {}
local function prune(i, since)
  if pruned[i] then return end
  pruned[i] = true
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

local function held(i, tokens)
  local tpm = arg(i, 2)
  if tpm > 0 and tokens > tpm then return tpm end
  return tokens
end

local function limits(i, lat, tokens)
  local rpm, tpm, conc, win = arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4)
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

-- Each candidate's health, read once a run and kept up to date by the admissions below.
local health = {}
local function health_of(i)
  if health[i] == nil then
    local h = redis.call('HMGET', key(i, 3), 'open_until', 'cool_until', 'probe_until',
                         'latency')
    health[i] = {num(h[1]), num(h[2]), num(h[3]), tonumber(h[4]) or arg(i, 6)}
  end
  return health[i]
end

-- 'ok', 0, probe | 'open'/'cooling'/'probing', wait | 'rpm'/'tpm'/'concurrency', wait, interval
local function check(i, tokens)
  local open_until, cool_until, probe_until, lat = unpack(health_of(i))
  if cool_until > now then return 'cooling', cool_until - now end
  if open_until > now then return 'open', open_until - now end
  local probe = open_until > 0
  if probe and probe_until > now then
    return 'probing', math.min(probe_until - now, PROBE_RECHECK_MS)
  end
  local limit, wait, interval = limits(i, lat, tokens)
  if limit then return limit, wait, interval end
  return 'ok', 0, probe and 1 or 0
end

local touched = {}
local function admit(i, probe, id, tokens)
  local lease = arg(i, 5)
  local member = id .. '|' .. tokens .. '|' .. now
  redis.call('ZADD', key(i, 1), now + lease, member)
  redis.call('INCRBY', key(i, 2), tokens)
  touched[i] = true
  if probe == 1 then
    redis.call('HSET', key(i, 3), 'probe_until', now + lease)
    health[i][3] = now + lease
  end
  return member
end

local function decide(id, wanted)
  local reasons = {}
  local best, best_slot, best_interval, sick_wait
  for _, i in ipairs(ranked()) do
    local tokens = held(i, wanted)
    local kind, wait, extra = check(i, tokens)
    if kind == 'ok' then
      local member = ''
      if not dry then member = admit(i, extra, id, tokens) end
      return {i, 0, extra, member, reasons}
    end
    table.insert(reasons, {i, kind, math.floor(wait)})
    if extra ~= nil then
      local slot = math.max(num(redis.call('GET', key(i, 4))), now + wait)
      if best_slot == nil or slot < best_slot then
        best, best_slot, best_interval = i, slot, extra
      end
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
end

local replies = {}
for c = first_call, #ARGV, 2 do table.insert(replies, decide(ARGV[c], tonumber(ARGV[c + 1]))) end
for i in pairs(touched) do
  local ttl = arg(i, 4) + arg(i, 5) + 60000
  redis.call('PEXPIRE', key(i, 1), ttl)
  redis.call('PEXPIRE', key(i, 2), ttl)
end
return replies
"""

SETTLE = _PRELUDE + """
-- Reports how one or more calls to one deployment ended, in order, as that many runs of the
-- script would (a worker groups the reports it makes in one loop iteration).
-- KEYS: window, tokens, health of the deployment.
-- ARGV: now, keep in window (1/0), window ms, consecutive failures, failure rate, min calls,
-- failure window ms, breaker cooldown ms, latency alpha, health ttl ms; then per report:
-- member, actual tokens, verdict (ok, fail, throttled, neutral, void), latency ms (0: none),
-- probe (1/0), cooldown after a 429 ms.
-- Returns one value per report: 1 when it opened the breaker, else 0.
local z, s, h = KEYS[1], KEYS[2], KEYS[3]
local keep, win = ARGV[2] == '1', tonumber(ARGV[3])
local streak_max, rate, min_calls = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local fail_win, cooldown = tonumber(ARGV[7]), tonumber(ARGV[8])
local alpha, ttl = tonumber(ARGV[9]), tonumber(ARGV[10])

local FIELDS = {'open_until', 'probe_until', 'cool_until', 'win_start', 'win_calls',
                'win_fails', 'streak', 'latency', 'opened'}
local got = redis.call('HMGET', h, unpack(FIELDS))
local st, dirty = {}, {}
for j, f in ipairs(FIELDS) do st[f] = got[j] end
local function put(f, v) st[f] = v; dirty[f] = true end

local tokens_delta, moved = 0, false
local function unwindow(member, used)
  if redis.call('ZREM', z, member) == 0 then return end
  local reserved, admitted = parts(member)
  tokens_delta, moved = tokens_delta - reserved, true
  if keep then
    local base = string.match(member, '^(.*)|%d+|%d+$')
    redis.call('ZADD', z, now, base .. '|' .. used .. '|' .. admitted)
    tokens_delta = tokens_delta + used
  end
end

local function judge(verdict, latency, probe, cool)
  if verdict == 'void' then
    if probe then put('probe_until', 0) end
    return 0
  end
  local open_until = num(st.open_until)
  local win_start, calls, fails = num(st.win_start), num(st.win_calls), num(st.win_fails)
  if now - win_start >= fail_win then win_start, calls, fails = now, 0, 0 end
  local opened = 0
  if verdict == 'throttled' then
    if now + cool > num(st.cool_until) then put('cool_until', now + cool) end
    if probe then put('probe_until', 0) end
  elseif verdict == 'fail' then
    calls, fails = calls + 1, fails + 1
    local streak = num(st.streak) + 1
    put('streak', streak)
    local tripped = streak >= streak_max or (calls >= min_calls and fails / calls >= rate)
    if probe or (open_until == 0 and tripped) then
      put('open_until', now + cooldown)
      put('probe_until', 0)
      put('streak', 0)
      put('opened', num(st.opened) + 1)
      win_start, calls, fails, opened = now, 0, 0, 1
    end
  else
    calls = calls + 1
    put('streak', 0)
    if probe then put('open_until', 0); put('probe_until', 0) end
    if verdict == 'ok' and latency > 0 then
      local old = tonumber(st.latency)
      if old then latency = alpha * latency + (1 - alpha) * old end
      put('latency', latency)
    end
  end
  put('win_start', win_start)
  put('win_calls', calls)
  put('win_fails', fails)
  return opened
end

local replies = {}
for r = 11, #ARGV, 6 do
  unwindow(ARGV[r], tonumber(ARGV[r + 1]))
  table.insert(replies, judge(ARGV[r + 2], tonumber(ARGV[r + 3]), ARGV[r + 4] == '1',
                              tonumber(ARGV[r + 5])))
end
if moved then
  redis.call('INCRBY', s, tokens_delta)
  redis.call('PEXPIRE', z, win + 60000)
  redis.call('PEXPIRE', s, win + 60000)
end
local flat = {}
for f in pairs(dirty) do table.insert(flat, f); table.insert(flat, st[f]) end
if #flat > 0 then
  redis.call('HSET', h, unpack(flat))
  redis.call('PEXPIRE', h, ttl)
end
return replies
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
