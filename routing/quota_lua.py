"""The Redis scripts behind tenant quotas; each runs atomically, so every worker sees one count.

State per tenant (key names in ``schemas.keys.tenant_key``):

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

A call is admitted only while ``spent + held < budget``; while ``spent < budget`` but the
calls in flight might reach it, the next waits for them to settle; once ``spent >= budget``
the tenant is out of budget. So the final overrun is at most what the calls in flight cost.
"""

from __future__ import annotations

__all__ = ["RESERVE", "SETTLE"]

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
-- KEYS: calls, held, spend. ARGV: now, id, rpm, tpm, max_in_flight, window ms, tokens,
-- cost nano, budget nano (-1: none), lease ms, rolling ms (0: calendar), bucket ms,
-- in-flight wait ms. Returns {1 admitted | 0 wait | -1 out of budget, wait ms, reason,
-- spent nano, held nano}.
local calls, held, spend = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[2]
local rpm, tpm, maxin, win = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local tokens, cost, budget, lease = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  tonumber(ARGV[10])
local rolling, bucket, inwait = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])

redis.call('ZREMRANGEBYSCORE', calls, '-inf', now - win)
local holding, flying = 0, 0
local flat = redis.call('HGETALL', held)
for i = 1, #flat, 2 do
  local c, ends = string.match(flat[i + 1], '^(%d+)|(%d+)$')
  if tonumber(ends) < now then redis.call('HDEL', held, flat[i])
  else holding, flying = holding + tonumber(c), flying + 1 end
end
local used = spent(spend, rolling, bucket)
if budget >= 0 and used >= budget then return {-1, 0, 'budget', used, holding} end
if budget >= 0 and used + holding >= budget then  -- wait for the calls in flight to settle
  return {0, inwait, 'budget (in flight)', used, holding}
end
if maxin > 0 and flying >= maxin then return {0, inwait, 'max_in_flight', used, holding} end
local members = redis.call('ZRANGE', calls, 0, -1, 'WITHSCORES')
local count = #members / 2
-- when a member stops counting: a window after its end (in flight: guess one window more)
local function frees(score) if score > now then return win end return score + win - now end
if rpm > 0 and count >= rpm then
  local wait = frees(tonumber(members[(count - rpm) * 2 + 2]))
  return {0, math.max(wait, 1), 'rpm', used, holding}
end
if tpm > 0 then
  local sum = 0
  for i = 1, #members, 2 do sum = sum + tonumber(string.match(members[i], '|(%d+)$')) end
  if sum > 0 and sum + tokens > tpm then
    for i = 1, #members, 2 do
      sum = sum - tonumber(string.match(members[i], '|(%d+)$'))
      if sum + tokens <= tpm then
        return {0, math.max(frees(tonumber(members[i + 1])), 1), 'tpm', used, holding}
      end
    end
  end
end
redis.call('ZADD', calls, now + lease, id .. '|' .. tokens)
redis.call('PEXPIRE', calls, win + lease)
redis.call('HSET', held, id, cost .. '|' .. (now + lease))
redis.call('PEXPIRE', held, lease * 2)
return {1, 0, '', used, holding}
"""

SETTLE = _PRELUDE + """
-- KEYS: calls, held, spend. ARGV: now, id, reserved tokens, actual tokens (-1: the call was
-- never made, forget it), actual cost nano, spend ttl s, rolling ms, bucket ms.
-- Returns the spend of the period after this call (nano).
local calls, held, spend = KEYS[1], KEYS[2], KEYS[3]
local id, reserved, actual, cost = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, rolling, bucket = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('HDEL', held, id)
local member = id .. '|' .. reserved
if redis.call('ZREM', calls, member) == 1 and actual >= 0 then
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
return spent(spend, rolling, bucket)
"""
