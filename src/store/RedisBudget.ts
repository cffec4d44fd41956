/**
 * A `TokenBudget` whose buckets live in Redis, shared by every process that names the same
 * key: N processes spend one provider quota, not N of them. Built by `RedisStore`.
 *
 * Why one Lua script per step: a reservation must take every dimension (requests, tokens,
 * input, output) or none, and two processes must never both see the same tokens free. A script
 * runs atomically on the server, so the check and the take are one step, and a model call costs
 * two round trips: `reserve` (refill, check, take) and `close` (settle or release, adopt the
 * provider's report, hold after a 429). The scripts read the clock with Redis's `TIME`, so
 * machines whose clocks disagree still agree on the buckets; every key gets a `PEXPIRE` of the
 * time its buckets take to be full again (plus a minute), so a budget nobody uses disappears,
 * and a bucket that disappeared is full, which is what it would be by then.
 *
 * The buckets are the in-memory budget's: a level per dimension refilled continuously at
 * `limit / per`, capped at the capacity (so a refund never lifts a level above it), your own
 * limits as a ceiling and the provider's report (limit, remaining, reset) adopted into the
 * shared state, so every process learns from the first one told. Not kept from the in-memory
 * budget: the catch-up refill after a report's `reset` and the probe before the first report.
 *
 * Fairness: in a process, callers that cannot go at once wait in a FIFO, and only its head
 * asks Redis again. Across processes, a head that could not go takes a ticket in a queue in
 * Redis (a sorted set in arrival order, each ticket with its cost); while the queue is not
 * empty, a cost goes only if what is left after it still covers the first ticket's (so the
 * first is never delayed, and a large reservation is not starved by small ones from other
 * processes; the room beyond it is not wasted either). A ticket has
 * a lease its holder renews at each try; a process that dies loses its place once the lease
 * ends. A waiting head sleeps until the time the script says its cost fits (at most
 * `maxWait`, so a refund elsewhere is seen soon), or until a settle in its own process.
 *
 * When Redis fails (refused, timed out, not connected), the call goes to an in-process budget
 * with the same options that has adopted every report meanwhile (`onStoreError: "local"`), the
 * change is told once through `onStatus`, and each later call tries Redis again after
 * `retryAfter`; a reservation is settled where it was taken. Under `"fail"` the call fails with
 * `StoreUnavailable`.
 *
 * @internal
 */
import { Cause, Deferred, Duration, Effect, Exit, FiberId, Option } from "effect"
import type { Redis } from "ioredis"
import * as AiModel from "../model/AiModel.js"
import * as TokenBudget from "../policy/TokenBudget.js"
import { type Hooks, type OnStoreError, StoreUnavailable } from "./SharedStore.js"

/**
 * Reads the buckets at Redis's `TIME`, refilled. KEYS: bucket hash, queue. ARGV after the
 * script's own: own capacity ×4 (0: none), own rate per ms ×4.
 * Hash fields: `l<i>` level, `c<i>`/`r<i>` the provider's reported capacity and rate,
 * `h<i>` held until (after a 429), `t` the stamp of the levels, `s` the ticket counter,
 * `d:<ticket>` a ticket's lease.
 */
const prelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = KEYS[1]
local f = redis.call('HMGET', b, 'l1','l2','l3','l4','c1','c2','c3','c4','r1','r2','r3','r4','h1','h2','h3','h4','t')
local stamp = tonumber(f[17]) or now
local cap, rate, level, held = {}, {}, {}, {}
local function limits(i, own_c, own_r)
  local c, r = math.huge, math.huge
  if own_c > 0 then c, r = own_c, own_r end
  local rc = tonumber(f[4 + i])
  if rc then c = math.min(c, rc); r = math.min(r, tonumber(f[8 + i])) end
  return c, r
end
for i = 1, 4 do
  cap[i], rate[i] = limits(i, tonumber(ARGV[O + i]), tonumber(ARGV[O + 4 + i]))
  held[i] = tonumber(f[12 + i]) or 0
  local l = tonumber(f[i])
  if cap[i] < math.huge then
    if l == nil then l = cap[i] else l = math.min(cap[i], l + rate[i] * math.max(0, now - stamp)) end
  end
  level[i] = l
end
local function save(ttl_extra)
  local ttl = 60000 + ttl_extra
  local fields = {'t', now}
  for i = 1, 4 do
    if cap[i] < math.huge then
      fields[#fields + 1] = 'l' .. i
      fields[#fields + 1] = tostring(level[i])
      if level[i] < cap[i] then ttl = math.max(ttl, 60000 + (cap[i] - level[i]) / rate[i]) end
    end
    if held[i] > now then ttl = math.max(ttl, 60000 + held[i] - now) end
  end
  redis.call('HSET', b, unpack(fields))
  redis.call('PEXPIRE', b, math.ceil(ttl))
  return math.ceil(ttl)
end
`

/**
 * KEYS: bucket, queue, processes. ARGV: amounts ×4, own capacity ×4, own rate ×4, ticket
 * ("": do not queue), lease ms, process id ("": no heartbeat this time), max wait ms.
 * Returns {1, 0, processes} granted; {0, wait ms, processes} not yet ({-1} processes: no
 * heartbeat); {-1, dimension, capacity} never fits.
 */
const reserveScript = `local O = 4
${prelude}
local q, p = KEYS[2], KEYS[3]
local ticket, lease, maxWait = ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[16])
local processes = -1
if ARGV[15] ~= '' then
  redis.call('ZADD', p, now, ARGV[15])
  redis.call('ZREMRANGEBYSCORE', p, '-inf', now - 10000)
  redis.call('PEXPIRE', p, 60000)
  processes = redis.call('ZCARD', p)
end
local amounts = {}
for i = 1, 4 do
  local a = tonumber(ARGV[i])
  amounts[i] = a
  if a > cap[i] + 1e-9 * math.max(1, a) then return {-1, i, tostring(cap[i])} end
end
local head
while true do
  local h = redis.call('ZRANGE', q, 0, 0)
  if #h == 0 then break end
  local d = tonumber(redis.call('HGET', b, 'd:' .. h[1]))
  if d and d >= now then head = h[1]; break end
  redis.call('ZREM', q, h[1])
  redis.call('HDEL', b, 'd:' .. h[1], 'a:' .. h[1])
end
local function waitFor(costs)
  local w = 0
  for i = 1, 4 do
    local a = costs[i]
    if a > 0 then
      if held[i] > now then w = math.max(w, held[i] - now) end
      if cap[i] < math.huge then
        local short = a - level[i]
        if short > 1e-9 * math.max(1, a) then w = math.max(w, short / rate[i]) end
      end
    end
  end
  return w
end
local wait = waitFor(amounts)
-- Behind another ticket, a cost may still go if what is left after it covers the first
-- ticket's cost too (it delays nobody); and it waits until that much has refilled.
local first = head == nil or head == ticket
if not first then
  local theirs = redis.call('HGET', b, 'a:' .. head)
  if theirs then
    local i = 0
    for amount in string.gmatch(theirs, '[^,]+') do
      i = i + 1
      amounts[i] = amounts[i] + tonumber(amount)
    end
  end
  wait = waitFor(amounts)
  for i = 1, 4 do amounts[i] = tonumber(ARGV[i]) end
end
if wait == 0 then
  for i = 1, 4 do
    if cap[i] < math.huge then level[i] = level[i] - amounts[i] end
  end
  if redis.call('ZREM', q, ticket) == 1 then
    redis.call('HDEL', b, 'd:' .. ticket, 'a:' .. ticket)
  end
  save(0)
  return {1, 0, processes}
end
wait = math.max(1, math.min(maxWait, math.ceil(wait)))
if ticket ~= '' then
  if not redis.call('ZSCORE', q, ticket) then
    redis.call('ZADD', q, redis.call('HINCRBY', b, 's', 1), ticket)
  end
  redis.call('HSET', b, 'd:' .. ticket, now + wait + lease, 'a:' .. ticket, table.concat(amounts, ','))
  local ttl = save(wait + lease)
  redis.call('PEXPIRE', q, ttl)
end
return {0, wait, processes}
`

/**
 * KEYS: bucket. ARGV: credits ×4 (reserved minus used; negative charges), own capacity ×4, own
 * rate ×4, reported period ms, then per dimension limit, remaining, reset ms ("" when absent),
 * then the held dimension (0: none), its hold ms, and 1 to hold a dimension whose limit the
 * provider never reported.
 */
const closeScript = `local O = 4
${prelude}
for i = 1, 4 do
  local credit = tonumber(ARGV[i])
  if cap[i] < math.huge and credit ~= 0 then level[i] = math.min(cap[i], level[i] + credit) end
end
local per = tonumber(ARGV[13])
for i = 1, 4 do
  local base = 13 + (i - 1) * 3
  local limit, remaining, reset = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  if limit then
    local perMilli = limit / per
    if remaining and reset and reset > 0 and remaining < limit then
      perMilli = math.min(perMilli, (limit - remaining) / reset)
    end
    redis.call('HSET', b, 'c' .. i, tostring(limit), 'r' .. i, tostring(perMilli))
    f[4 + i], f[8 + i] = limit, perMilli
    local was = cap[i] < math.huge
    cap[i], rate[i] = limits(i, tonumber(ARGV[O + i]), tonumber(ARGV[O + 4 + i]))
    if was then level[i] = math.min(level[i], cap[i]) else level[i] = cap[i] end
  end
  if remaining and cap[i] < math.huge then level[i] = math.min(level[i], remaining) end
end
local hold = tonumber(ARGV[26])
if hold > 0 then
  -- a limit the provider reported (before or in this 429), not only our own
  local limited = tonumber(f[4 + hold]) ~= nil
  if ARGV[28] == '1' or limited then
    held[hold] = math.max(held[hold], now + tonumber(ARGV[27]))
    redis.call('HSET', b, 'h' .. hold, held[hold])
  end
end
save(0)
return 1
`

/** KEYS: bucket. ARGV: own capacity ×4, own rate ×4. Returns the levels and capacities. */
const stateScript = `local O = 0
${prelude}
local out = {}
for i = 1, 4 do
  if cap[i] < math.huge then
    out[#out + 1] = tostring(i); out[#out + 1] = tostring(cap[i]); out[#out + 1] = tostring(level[i]); out[#out + 1] = tostring(rate[i])
  end
end
return out
`

interface Scripts {
  wizReserve(bucket: string, queue: string, processes: string, ...args: Array<string | number>): Promise<Array<number | string>>
  wizClose(bucket: string, ...args: Array<string | number>): Promise<number>
  wizState(bucket: string, ...args: Array<string | number>): Promise<Array<string>>
}

/**
 * Teaches `client` the scripts (`defineCommand`: EVALSHA, and EVAL once when Redis does not
 * know them yet, e.g. after a restart) and returns them, typed.
 */
const defineScripts = (client: Redis): Scripts => {
  client.defineCommand("wizReserve", { numberOfKeys: 3, lua: reserveScript })
  client.defineCommand("wizClose", { numberOfKeys: 1, lua: closeScript })
  client.defineCommand("wizState", { numberOfKeys: 1, lua: stateScript })
  // defineCommand adds each script as a method at run time, where ioredis's types cannot see it
  return client as unknown as Scripts
}

/**
 * How a shared budget talks to Redis.
 *
 * @internal
 */
export interface Settings {
  readonly client: Redis
  /** The budget's name in Redis (`SharedStore.identity`). */
  readonly key: string
  readonly processId: string
  /** Where the processes sharing the provider say they are alive. */
  readonly processesKey: string
  readonly onStoreError: OnStoreError
  /** After a failure, how long the process stays local before it tries Redis again. */
  readonly retryAfter: Duration.Duration
  /** Longest a waiting head sleeps before it asks again. */
  readonly maxWait: Duration.Duration
  /** How long a ticket keeps its place after its holder's last try. */
  readonly lease: Duration.Duration
  readonly hooks: Hooks | undefined
}

/**
 * Runs one Redis command as an Effect: a rejection is a `StoreUnavailable`. How long it may
 * take is the client's `commandTimeout` (a timer of ioredis's, not a fiber per command).
 *
 * @internal
 */
export const command = <A>(operation: string, run: () => Promise<A>) =>
  Effect.tryPromise({
    try: run,
    catch: (error) =>
      new StoreUnavailable({ store: "redis", operation, reason: error instanceof Error ? error.message : String(error) })
  })

/**
 * Whether the process is on Redis now, and when it may try again after a failure; shared by a
 * store's budgets and breakers, so one failure is told once.
 *
 * @internal
 */
export interface Health {
  /** Whether to try Redis now. */
  readonly tryShared: (now: number) => boolean
  /** Redis answered. */
  readonly answered: () => void
  /** Redis failed at `now`. */
  readonly failed: (now: number, error: StoreUnavailable) => void
  readonly mode: () => "shared" | "local"
}

/** @internal */
export const health = (client: Redis, retryAfter: Duration.Duration, hooks: Hooks | undefined): Health => {
  let local = false
  let retryAt = 0
  const retryMillis = Duration.toMillis(retryAfter)
  return {
    // ioredis knows when its connection is down: no need to wait for a timeout then
    tryShared: (now) => !local || (now >= retryAt && client.status === "ready"),
    answered: () => {
      if (!local) return
      local = false
      hooks?.onStatus?.({ mode: "shared", store: "redis" })
    },
    failed: (now, error) => {
      retryAt = now + retryMillis
      if (local) return
      local = true
      hooks?.onStatus?.({ mode: "local", store: "redis", reason: error.reason })
    },
    mode: () => local ? "local" : "shared"
  }
}

/** A report as the close script's arguments: limit, remaining, reset ms per dimension. */
const reportArgs = (report: AiModel.RateLimits | undefined): Array<string> =>
  TokenBudget.dimensions.flatMap((dimension) => {
    const window = report?.[dimension]
    return [
      window?.limit === undefined ? "" : String(window.limit),
      window?.remaining === undefined ? "" : String(window.remaining),
      window?.reset === undefined ? "" : String(Duration.toMillis(window.reset))
    ]
  })

/** The capacity and rate per ms of your own limits, as the scripts take them (0: none). */
const ownLimits = (options: TokenBudget.Options): Array<number> => {
  const capacity: Array<number> = []
  const rate: Array<number> = []
  for (const dimension of TokenBudget.dimensions) {
    const given = options.limits?.[dimension]
    if (given === undefined) {
      capacity.push(0)
      rate.push(0)
      continue
    }
    const limit = typeof given === "number" ? given : given.limit
    const per = Duration.toMillis(typeof given === "number" ? TokenBudget.defaults.per : given.per ?? TokenBudget.defaults.per)
    capacity.push(typeof given === "number" ? limit : given.burst ?? limit)
    rate.push(limit / per)
  }
  return [...capacity, ...rate]
}

let tickets = 0

/**
 * A shared budget over `settings.client`, with `options` as the in-memory one takes them. The
 * in-memory budget it falls back on is made here too, and adopts every report while Redis
 * answers, so it knows the provider's limits when it is needed.
 *
 * @internal
 */
export const make = (
  settings: Settings,
  options: TokenBudget.Options,
  shared: Health,
  processes: { count: number }
): Effect.Effect<TokenBudget.TokenBudget<StoreUnavailable>> =>
  Effect.gen(function*() {
    const { client, key, processId, onStoreError } = settings
    const local = yield* TokenBudget.make(options)
    const bucket = `${key}:bucket`
    const queueKey = `${key}:queue`
    const processesKey = settings.processesKey
    const own = ownLimits(options)
    const reportedPer = Duration.toMillis(options.reportedPer ?? TokenBudget.defaults.reportedPer)
    const refundOn = options.refundOn ?? TokenBudget.defaults.refundOn
    const holdUnknown = (options.holdUnknown ?? true) ? "1" : "0"
    const lease = Duration.toMillis(settings.lease)
    const maxWait = Duration.toMillis(settings.maxWait)
    const scripts = defineScripts(client)

    /** Callers of this process waiting for their turn to ask Redis; the first is the head. */
    const line: Array<Deferred.Deferred<void>> = []
    /** Ends the head's sleep early: a settle here may have made room. */
    let nudge: Deferred.Deferred<void> | undefined

    const wake = () => {
      if (nudge !== undefined) Deferred.unsafeDone(nudge, Exit.void)
    }
    const leave = (turn: Deferred.Deferred<void>) => {
      const at = line.indexOf(turn)
      if (at < 0) return
      line.splice(at, 1)
      if (at === 0 && line.length > 0) Deferred.unsafeDone(line[0]!, Exit.void)
    }

    /** Redis, or the local budget when Redis failed (or fails now) under `"local"`. */
    const onRedis = <A, E, B, E2>(
      redis: Effect.Effect<A, E | StoreUnavailable>,
      fallback: Effect.Effect<B, E2>
    ): Effect.Effect<A | B, E | E2 | StoreUnavailable> =>
      Effect.clockWith((clock) => {
        if (!shared.tryShared(clock.unsafeCurrentTimeMillis())) return fallback
        return Effect.matchEffect(redis, {
          onSuccess: (value): Effect.Effect<A | B, E | E2 | StoreUnavailable> => {
            shared.answered()
            return Effect.succeed(value)
          },
          onFailure: (error): Effect.Effect<A | B, E | E2 | StoreUnavailable> => {
            if (!(error instanceof StoreUnavailable)) return Effect.fail(error)
            shared.failed(clock.unsafeCurrentTimeMillis(), error)
            return onStoreError === "fail" ? Effect.fail(error) : fallback
          }
        })
      })

    type Reply = { readonly granted: true } | { readonly granted: false; readonly wait: number }

    // The heartbeat rides on a reservation at most once a second.
    let beatAt = -Infinity
    const ask = (amounts: ReadonlyArray<number>, ticket: string) =>
      Effect.flatMap(
        Effect.clockWith((clock) => {
          const now = clock.unsafeCurrentTimeMillis()
          const beat = now - beatAt >= 1_000
          if (beat) beatAt = now
          return command("reserve", () =>
            scripts.wizReserve(bucket, queueKey, processesKey, ...amounts, ...own, ticket, lease, beat ? processId : "", maxWait))
        }),
        (reply): Effect.Effect<Reply, TokenBudget.BudgetExceeded> => {
          const [status, value, peers] = reply
          if (Number(status) === -1) {
            const i = Number(value) - 1
            return Effect.fail(
              new TokenBudget.BudgetExceeded({ dimension: TokenBudget.dimensions[i]!, cost: amounts[i]!, limit: Number(peers) })
            )
          }
          if (Number(peers) >= 0) processes.count = Number(peers)
          return Effect.succeed(Number(status) === 1 ? { granted: true } : { granted: false, wait: Number(value) })
        }
      )

    /** Closes a reservation taken on Redis: credits, a report, a hold. */
    const close = (credits: ReadonlyArray<number>, report: AiModel.RateLimits | undefined, hold?: AiModel.RateLimited) => {
      const held = hold?.retryAfter === undefined ? 0 : TokenBudget.dimensions.indexOf(hold.limit) + 1
      return command("close", () =>
        scripts.wizClose(
          bucket,
          ...credits,
          ...own,
          reportedPer,
          ...reportArgs(report),
          held,
          hold?.retryAfter === undefined ? 0 : Duration.toMillis(hold.retryAfter),
          holdUnknown
        ))
    }
    /** What the local budget learns meanwhile, so it knows the limits if Redis fails. */
    const learnLocally = (report: AiModel.RateLimits | undefined) => report === undefined ? Effect.void : local.adopt(report)

    /** A reservation taken on Redis: closed at most once, where it was taken. */
    const sharedReservation = (cost: TokenBudget.Cost, amounts: ReadonlyArray<number>, queued: boolean) => {
      let open = true
      const closing = (credits: ReadonlyArray<number>, report?: AiModel.RateLimits, hold?: AiModel.RateLimited) =>
        Effect.suspend(() => {
          if (!open) return Effect.void
          open = false
          wake()
          return Effect.zipRight(
            learnLocally(report),
            // a close that cannot reach Redis is lost with Redis's state; the local budget goes on
            Effect.catchAll(onRedis(close(credits, report, hold), Effect.void), () => Effect.void)
          )
        })
      const settled = (actual: TokenBudget.Cost) => {
        const used = TokenBudget.amountsOf({ ...cost, ...actual })
        return amounts.map((reserved, i) => reserved - used[i]!)
      }
      return {
        cost,
        queued,
        settle: (actual: TokenBudget.Cost) => closing(settled(actual)),
        release: closing(amounts),
        settleWith: (actual: TokenBudget.Cost, report: AiModel.RateLimits | undefined) => closing(settled(actual), report),
        refusedWith: (error: AiModel.RateLimited) => closing(amounts, error.rateLimits, error)
      }
    }

    type Shared = ReturnType<typeof sharedReservation>

    /**
     * Waits its turn in the process, then asks Redis as the head until granted. Only the waits
     * are interruptible (`restore`): a script that ran has taken or queued, and its answer is
     * always read, so a grant is never lost to an interruption.
     */
    const waitInLine = (
      amounts: ReadonlyArray<number>,
      restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
    ) =>
      Effect.suspend(() => {
        const turn = Deferred.unsafeMake<void>(FiberId.none)
        line.push(turn)
        if (line[0] === turn) Deferred.unsafeDone(turn, Exit.void)
        const ticket = `${processId}:${++tickets}`
        const loop: Effect.Effect<void, TokenBudget.BudgetExceeded | StoreUnavailable> = Effect.flatMap(
          ask(amounts, ticket),
          (reply) => {
            if (reply.granted) return Effect.void
            const woken = Deferred.unsafeMake<void>(FiberId.none)
            nudge = woken
            return Effect.zipRight(restore(Effect.raceFirst(Effect.sleep(Duration.millis(reply.wait)), Deferred.await(woken))), loop)
          }
        )
        return Effect.ensuring(Effect.zipRight(restore(Deferred.await(turn)), loop), Effect.sync(() => leave(turn)))
      })

    const reserveShared = (cost: TokenBudget.Cost) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const amounts = TokenBudget.amountsOf(cost)
          const inLine = Effect.as(waitInLine(amounts, restore), true)
          const granted = line.length === 0
            ? Effect.flatMap(ask(amounts, ""), (reply) => reply.granted ? Effect.succeed(false) : inLine)
            : inLine
          return Effect.map(granted, (queued) => sharedReservation(cost, amounts, queued))
        })
      )

    const reserve = (cost: TokenBudget.Cost): Effect.Effect<TokenBudget.Reservation & Partial<Shared>, TokenBudget.BudgetExceeded | StoreUnavailable> =>
      onRedis(reserveShared(cost), local.reserve(cost))

    const adopt = (report: AiModel.RateLimits) =>
      Effect.zipRight(
        local.adopt(report),
        Effect.catchAll(onRedis(close([0, 0, 0, 0], report), Effect.void), () => Effect.void)
      )

    const refused = (error: AiModel.RateLimited) =>
      Effect.zipRight(
        local.refused(error),
        Effect.catchAll(onRedis(close([0, 0, 0, 0], error.rateLimits, error), Effect.void), () => Effect.void)
      )

    const meter = (request: AiModel.CompletionRequest, onWaited?: (waitedMillis: number, cost: TokenBudget.Cost) => Effect.Effect<void>) =>
    <E, R>(attempt: Effect.Effect<AiModel.Completion, E, R>) =>
      Effect.clockWith((clock) => {
        const cost = TokenBudget.requestCost(request)
        const from = clock.unsafeCurrentTimeMillis()
        return Effect.uninterruptibleMask((restore) =>
          Effect.flatMap(restore(reserve(cost)), (held) => {
            // a reservation Redis granted at once did not wait: its round trip is no wait
            const waited = onWaited === undefined || held.queued === false ? 0 : clock.unsafeCurrentTimeMillis() - from
            const run = Effect.matchCauseEffect(restore(attempt), {
              onFailure: (cause) => {
                const error = Option.getOrUndefined(Cause.failureOption(cause))
                const closed = error === undefined || !refundOn(error)
                  ? held.settle(held.cost)
                  : error instanceof AiModel.RateLimited
                  ? held.refusedWith === undefined ? Effect.zipRight(held.release, local.refused(error)) : held.refusedWith(error)
                  : held.release
                return Effect.zipRight(closed, Effect.failCause(cause))
              },
              onSuccess: (completion) =>
                Effect.as(
                  held.settleWith === undefined
                    ? Effect.zipRight(held.settle(TokenBudget.usageCost(completion.usage)), learnLocally(completion.rateLimits))
                    : held.settleWith(TokenBudget.usageCost(completion.usage), completion.rateLimits),
                  completion
                )
            })
            return waited > 0 ? Effect.zipRight(onWaited!(waited, cost), run) : run
          })
        )
      })

    const state = Effect.gen(function*() {
      const mode = shared.mode()
      const sharedPart = { store: "redis", processes: processes.count, mode }
      if (mode === "local") return { ...(yield* local.state), shared: sharedPart }
      const reply = yield* Effect.either(command("state", () => scripts.wizState(bucket, ...own)))
      if (reply._tag === "Left") return { ...(yield* local.state), shared: sharedPart }
      const dimensions: { [K in TokenBudget.Dimension]?: TokenBudget.DimensionState } = {}
      const fields = reply.right
      for (let i = 0; i + 3 < fields.length; i += 4) {
        dimensions[TokenBudget.dimensions[Number(fields[i]) - 1]!] = {
          capacity: Number(fields[i + 1]),
          available: Number(fields[i + 2]),
          perSecond: Number(fields[i + 3]) * 1000
        }
      }
      return { dimensions, waiting: line.length, shared: sharedPart }
    })

    const budget: TokenBudget.TokenBudget<StoreUnavailable> = { reserve, adopt, refused, meter, state }
    return budget
  })
