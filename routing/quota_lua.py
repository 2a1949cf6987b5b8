"""The Redis scripts behind quotas; each runs atomically, so every worker sees one count.

A call is checked against one or more **scopes**: its tenant, and the API key that submitted
its job when that key has limits of its own. A call is admitted only if every scope admits it,
and then it is counted in every scope, in the same script. State per scope (key names in
``schemas.keys.tenant_key``):

- ``calls``: a sorted set, one member ``<id>|<tokens>`` per admitted call. While the call
  runs its score is its lease end (in the future, so it counts); once it ends the score is
  its end time, so it counts until a window after its answer: the upstream sees a call
  somewhere between admission and answer, so counting to the end keeps what it sees in any
  window at or under the limit (``routing.limits`` does the same for deployments). rpm is the
  members scored after ``now - window``, tpm the sum of their tokens.
- ``held``: a hash ``id → <cost nano>|<lease end ms>``: the reservations of calls in flight
  (max_in_flight is its size; a dead worker's reservation lapses at its lease end).
- ``spend:<period>``: spend in nanodollars (an integer: Lua numbers are doubles, exact to
  2^53 nano = $9M) in the current daily or monthly period, or for a rolling period a hash of
  buckets (the period split in 60) summed over the window.
- ``seeded:<period>`` and ``seeded:calls``: set once ``spend`` and ``calls`` hold what the
  database knows. Both vanish with the rest when Redis loses its data (or a new period
  starts): RESERVE then answers "seed first", the worker reads the spend and the recent calls
  of the scope from the database, and SEED adds them, once, whichever worker gets there first.

A call is admitted only while ``spent + held < budget``; while ``spent < budget`` but the
calls in flight might reach it, the next waits for them to settle; once ``spent >= budget``
the scope is out of budget. So the final overrun is at most what the calls in flight cost.
"""

from __future__ import annotations

__all__ = ["KEYS_PER_SCOPE", "RESERVE", "SEED", "SETTLE"]

KEYS_PER_SCOPE = 5
"""calls, held, spend, seeded (spend), seeded (calls)."""

_PRELUDE = """
local function clock()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local now = clock()
local function spent(key, rolling, bucket)
  if rolling <= 0 then return tonumber(redis.call('GET', key)) or 0 end
  local total, first = 0, math.floor((now - rolling) / bucket) + 1
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local b = tonumber(flat[i])
    if b < first then redis.call('HDEL', key, flat[i])
    else total = total + tonumber(flat[i + 1]) end
  end
  return total
end
"""

RESERVE = _PRELUDE + """
-- KEYS: per scope calls, held, spend, seeded spend, seeded calls.
-- ARGV: now, id, scopes, tokens, cost nano, lease ms, in-flight wait ms; then per scope
-- rpm, tpm, max_in_flight, window ms, budget nano (-1: none), rolling ms (0: calendar),
-- bucket ms. Returns {1 admitted | 0 wait | -1 out of budget | -2 seed first, wait ms,
-- reason, spent nano, held nano, scope (1-based)}.
local id, scopes = ARGV[2], tonumber(ARGV[3])
local tokens, cost, lease, inwait = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])

local function check(s)
  local k, a = (s - 1) * 5, 7 + (s - 1) * 7
  local calls, held, spend = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local rpm, tpm, maxin, win = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local budget, rolling, bucket = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]),
    tonumber(ARGV[a + 7])
  if (budget >= 0 and redis.call('EXISTS', KEYS[k + 4]) == 0)
     or ((rpm > 0 or tpm > 0) and redis.call('EXISTS', KEYS[k + 5]) == 0) then
    return {-2, 0, 'seed', 0, 0, s}
  end
  redis.call('ZREMRANGEBYSCORE', calls, '-inf', now - win)
  local holding, flying = 0, 0
  local flat = redis.call('HGETALL', held)
  for i = 1, #flat, 2 do
    local c, ends = string.match(flat[i + 1], '^(%d+)|(%d+)$')
    if tonumber(ends) < now then redis.call('HDEL', held, flat[i])
    else holding, flying = holding + tonumber(c), flying + 1 end
  end
  local used = spent(spend, rolling, bucket)
  if budget >= 0 and used >= budget then return {-1, 0, 'budget', used, holding, s} end
  if budget >= 0 and used + holding >= budget then  -- wait for the calls in flight to settle
    return {0, inwait, 'budget (in flight)', used, holding, s}
  end
  if maxin > 0 and flying >= maxin then
    return {0, inwait, 'max_in_flight', used, holding, s}
  end
  local members = redis.call('ZRANGE', calls, 0, -1, 'WITHSCORES')
  local count = #members / 2
  -- when a member stops counting: a window after its end (in flight: guess one window more)
  local function frees(score) if score > now then return win end return score + win - now end
  if rpm > 0 and count >= rpm then
    local wait = frees(tonumber(members[(count - rpm) * 2 + 2]))
    return {0, math.max(wait, 1), 'rpm', used, holding, s}
  end
  if tpm > 0 then
    local sum = 0
    for i = 1, #members, 2 do sum = sum + tonumber(string.match(members[i], '|(%d+)$')) end
    if sum > 0 and sum + tokens > tpm then
      for i = 1, #members, 2 do
        sum = sum - tonumber(string.match(members[i], '|(%d+)$'))
        if sum + tokens <= tpm then
          return {0, math.max(frees(tonumber(members[i + 1])), 1), 'tpm', used, holding, s}
        end
      end
    end
  end
  return nil
end

for s = 1, scopes do
  local refused = check(s)
  if refused then return refused end
end
for s = 1, scopes do
  local k, a = (s - 1) * 5, 7 + (s - 1) * 7
  local win = tonumber(ARGV[a + 4])
  redis.call('ZADD', KEYS[k + 1], now + lease, id .. '|' .. tokens)
  redis.call('PEXPIRE', KEYS[k + 1], win + lease)
  redis.call('HSET', KEYS[k + 2], id, cost .. '|' .. (now + lease))
  redis.call('PEXPIRE', KEYS[k + 2], lease * 2)
end
return {1, 0, '', 0, 0, 0}
"""

SETTLE = _PRELUDE + """
-- KEYS: per scope calls, held, spend, seeded spend, seeded calls. ARGV: now, id, scopes,
-- reserved tokens, actual tokens (-1: the call was never made, forget it), actual cost nano;
-- then per scope spend ttl s, rolling ms, bucket ms.
-- Returns each scope's spend of the period after this call (nano).
local id, scopes = ARGV[2], tonumber(ARGV[3])
local reserved, actual, cost = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local out = {}
for s = 1, scopes do
  local k, a = (s - 1) * 5, 6 + (s - 1) * 3
  local calls, held, spend = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local ttl, rolling, bucket = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3])
  redis.call('HDEL', held, id)
  if redis.call('ZREM', calls, id .. '|' .. reserved) == 1 and actual >= 0 then
    redis.call('ZADD', calls, now, id .. '|' .. actual)
  end
  if cost > 0 then
    if rolling > 0 then
      redis.call('HINCRBY', spend, tostring(math.floor(now / bucket)), cost)
    else
      redis.call('INCRBY', spend, cost)
    end
    redis.call('EXPIRE', spend, ttl)
  end
  out[s] = spent(spend, rolling, bucket)
end
return out
"""

SEED = _PRELUDE + """
-- KEYS: one scope's calls, held, spend, seeded spend, seeded calls.
-- ARGV: now, spend ttl s (0: no budget, leave spend alone), marker ttl s (0: keep it; a
-- rolling period's marker never ends), window ms (0: no rate limits, leave calls alone),
-- spend entries n, calls entries m; then n pairs (bucket, or -1 for a calendar period; nano)
-- and m pairs (member, score ms).
-- Adds what the database knows to whatever this Redis counted since it lost its data (a call
-- settled in between may so count twice: a scope can stop early, never late). Returns the
-- number of parts seeded by this call (0: another worker was first).
local ttl, mark, win = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n, m = tonumber(ARGV[5]), tonumber(ARGV[6])
local done = 0
local function claim_marker(key, seconds)
  if seconds > 0 then return redis.call('SET', key, now, 'NX', 'EX', seconds) end
  return redis.call('SET', key, now, 'NX')
end
if ttl > 0 and claim_marker(KEYS[4], mark) then
  for i = 0, n - 1 do
    local bucket, nano = ARGV[7 + 2 * i], tonumber(ARGV[8 + 2 * i])
    if tonumber(bucket) < 0 then redis.call('INCRBY', KEYS[3], nano)
    else redis.call('HINCRBY', KEYS[3], bucket, nano) end
  end
  if n > 0 then redis.call('EXPIRE', KEYS[3], ttl) end
  done = done + 1
end
if win > 0 and claim_marker(KEYS[5], 0) then
  local base = 7 + 2 * n
  for i = 0, m - 1 do
    redis.call('ZADD', KEYS[1], tonumber(ARGV[base + 1 + 2 * i]), ARGV[base + 2 * i])
  end
  if m > 0 then redis.call('PEXPIRE', KEYS[1], win * 2) end
  done = done + 1
end
return done
"""
