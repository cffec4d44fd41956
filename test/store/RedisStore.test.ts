import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, FastCheck as fc, Fiber } from "effect"
import { Redis } from "ioredis"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as CircuitBreaker from "../../src/policy/CircuitBreaker.js"
import * as TokenBudget from "../../src/policy/TokenBudget.js"
import * as RedisStore from "../../src/store/RedisStore.js"
import * as SharedStore from "../../src/store/SharedStore.js"
import * as Services from "../support/services.js"

const redis = await Services.redis()

/** A client of the test's own, closed with the scope. */
const client = (options: { enableOfflineQueue?: boolean } = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => new Redis(redis.url, { maxRetriesPerRequest: 0, ...options }).on("error", () => {})),
    (made) => Effect.promise(() => made.quit().catch(() => made.disconnect()))
  )

/** Deletes every key under `prefix` when the scope closes. */
const cleanUp = (prefix: string) =>
  Effect.flatMap(client(), (admin) =>
    Effect.addFinalizer(() =>
      Effect.promise(async () => {
        const keys = await admin.keys(`${prefix}:*`)
        if (keys.length > 0) await admin.del(...keys)
      })
    ))

/** A store as one process has it: its own client, the test's prefix. */
const storeOf = (prefix: string, options: Partial<RedisStore.Options> = {}) =>
  Effect.flatMap(client({ enableOfflineQueue: false }), (own) => RedisStore.make({ client: own, prefix, ...options }))

const statuses = () => {
  const seen: Array<SharedStore.Status["mode"]> = []
  return { seen, hooks: { onStatus: (status: SharedStore.Status) => void seen.push(status.mode) } }
}

/** Polls `state` every 20 ms until it is `wanted`, for at most a second (a message crosses Redis). */
const eventually = (state: Effect.Effect<CircuitBreaker.State>, wanted: CircuitBreaker.State) =>
  Effect.gen(function*() {
    for (let i = 0; i < 50; i++) {
      if ((yield* state) === wanted) return wanted
      yield* Effect.sleep("20 millis")
    }
    return yield* state
  })

const report = (dimension: TokenBudget.Dimension, fields: { limit?: number; remaining?: number; reset?: number }) =>
  new AiModel.RateLimits({
    [dimension]: new AiModel.RateLimitWindow({
      ...(fields.limit === undefined ? {} : { limit: fields.limit }),
      ...(fields.remaining === undefined ? {} : { remaining: fields.remaining }),
      ...(fields.reset === undefined ? {} : { reset: Duration.millis(fields.reset) })
    })
  })

describe.skipIf(!redis.available)("RedisStore (on a real Redis)", () => {
  describe("budget", () => {
    it.scopedLive("takes every dimension of a reservation or none of them", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const store = yield* storeOf(prefix)
        const budget = yield* store.budget("m", { limits: { requests: 10, tokens: 100 } })
        yield* budget.reserve({ requests: 1, tokens: 90 })
        // 20 tokens do not fit: the request it would take stays free while it waits
        const waiting = yield* Effect.fork(budget.reserve({ requests: 1, tokens: 20 }))
        yield* Effect.sleep("100 millis")
        const state = yield* budget.state
        expect(state.dimensions.requests?.available).toBeCloseTo(9, 0)
        expect(state.dimensions.tokens?.available).toBeLessThan(20)
        expect(state.shared).toEqual({ store: "redis", processes: 1, mode: "shared" })
        yield* Fiber.interrupt(waiting)
      }))

    it.scopedLive("caps a refund at capacity, and its keys expire", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const store = yield* storeOf(prefix)
        const budget = yield* store.budget("m", { limits: { tokens: 1_000 } })
        const held = yield* budget.reserve({ tokens: 100 })
        // 200 ms refill ~3 tokens: the refund of all 100 would lift the level above capacity
        yield* Effect.sleep("200 millis")
        yield* held.settle({ tokens: 0 })
        const state = yield* budget.state
        expect(state.dimensions.tokens?.available).toBeLessThanOrEqual(1_000)
        expect(state.dimensions.tokens?.available).toBeGreaterThan(999)
        const admin = yield* client()
        const keys = yield* Effect.promise(() => admin.keys(`${prefix}:*`))
        expect(keys.length).toBeGreaterThan(0)
        for (const key of keys) {
          const ttl = yield* Effect.promise(() => admin.pttl(key))
          expect(ttl).toBeGreaterThan(0)
        }
      }))

    it.scopedLive("fails at once with BudgetExceeded for a cost that can never fit", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const store = yield* storeOf(prefix)
        const budget = yield* store.budget("m", { limits: { tokens: 100 } })
        const exit = yield* Effect.exit(budget.reserve({ tokens: 101 }))
        expect(exit).toEqual(Exit.fail(new TokenBudget.BudgetExceeded({ dimension: "tokens", cost: 101, limit: 100 })))
      }))

    it.scopedLive("a provider's report told to one process is the budget of every process", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const first = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", {}))
        const second = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", {}))
        yield* first.adopt(report("tokens", { limit: 500, remaining: 100, reset: 48_000 }))
        const state = yield* second.state
        expect(state.dimensions.tokens?.capacity).toBe(500)
        expect(state.dimensions.tokens?.available).toBeGreaterThanOrEqual(100)
        expect(state.dimensions.tokens?.available).toBeLessThan(110)
        // and a 429's hold reaches the other process too: its next reservation waits
        yield* first.refused(new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.millis(300) }))
        const started = Date.now()
        yield* second.reserve({ tokens: 1 })
        expect(Date.now() - started).toBeGreaterThanOrEqual(250)
      }))

    it.scopedLive("holdUnknown: false: a 429 holds a dimension only once the provider reported its limit, not on our own ceiling alone", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const options = { limits: { tokens: 1_000 }, holdUnknown: false, probe: false }
        const first = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", options))
        const second = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", options))
        const waited = (budget: typeof second) =>
          Effect.gen(function*() {
            const started = Date.now()
            yield* budget.reserve({ tokens: 1 })
            return Date.now() - started
          })
        // our own limit only: the refused call waits, the other process does not
        yield* first.refused(new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.seconds(5) }))
        expect(yield* waited(second)).toBeLessThan(2_000)
        // the provider's limit reported: its 429 holds every process
        yield* first.adopt(report("tokens", { limit: 1_000, remaining: 900, reset: 6_000 }))
        yield* first.refused(new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.millis(300) }))
        expect(yield* waited(second)).toBeGreaterThanOrEqual(250)
      }))

    it.scopedLive("a large reservation is not starved by a stream of small ones from another process", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const limits = { tokens: { limit: 1_000, per: Duration.seconds(1) } }
        const small = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", { limits }))
        const large = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", { limits }))
        yield* small.reserve({ tokens: 1_000 })
        let smallWhileWaiting = 0
        const stream = yield* Effect.fork(Effect.forever(Effect.tap(small.reserve({ tokens: 30 }), () => {
          smallWhileWaiting++
        })))
        yield* Effect.sleep("20 millis")
        const started = Date.now()
        const before = smallWhileWaiting
        yield* large.reserve({ tokens: 900 })
        const waited = Date.now() - started
        const taken = (smallWhileWaiting - before) * 30
        yield* Fiber.interrupt(stream)
        // 900 tokens refill in 0.9 s; small ones taking every refill would keep it waiting forever.
        // Once its ticket heads the queue, small ones take nothing until it is granted.
        expect(waited).toBeLessThan(2_000)
        expect(taken).toBeLessThan(300)
      }))

    it.scopedLive("property: fibers with separate clients never take more than the limit in any dimension over any window", () =>
      Effect.gen(function*() {
        const capacity = { requests: 8, tokens: 200 }
        const perMillis = 1_000
        const costs = fc.array(
          fc.array(fc.record({ requests: fc.constant(1), tokens: fc.integer({ min: 1, max: 80 }) }), { minLength: 2, maxLength: 4 }),
          { minLength: 2, maxLength: 3 }
        )
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(costs, (fibers) =>
              Effect.runPromise(Effect.scoped(Effect.gen(function*() {
                const prefix = Services.uniqueName("wiz_test")
                yield* cleanUp(prefix)
                const grants: Array<{ at: number; requests: number; tokens: number }> = []
                const limits = {
                  requests: { limit: capacity.requests, per: Duration.millis(perMillis) },
                  tokens: { limit: capacity.tokens, per: Duration.millis(perMillis) }
                }
                yield* Effect.forEach(fibers, (list) =>
                  Effect.gen(function*() {
                    const budget = yield* Effect.flatMap(storeOf(prefix), (store) => store.budget("m", { limits }))
                    for (const cost of list) {
                      yield* budget.reserve(cost)
                      // told after it was granted, by at most a round trip
                      grants.push({ at: Date.now(), ...cost })
                    }
                  }), { concurrency: "unbounded" })
                // Over every window [a, b] of grants: taken <= capacity + rate * (b - a), with
                // 100 ms for the round trip and event-loop lag between a grant and its answer
                // (20 tokens: a bucket granted twice would be 200 over).
                grants.sort((x, y) => x.at - y.at)
                for (let i = 0; i < grants.length; i++) {
                  let requests = 0
                  let tokens = 0
                  for (let j = i; j < grants.length; j++) {
                    requests += grants[j]!.requests
                    tokens += grants[j]!.tokens
                    const span = grants[j]!.at - grants[i]!.at + 100
                    expect(requests).toBeLessThanOrEqual(capacity.requests + capacity.requests * span / perMillis + 1e-6)
                    expect(tokens).toBeLessThanOrEqual(capacity.tokens + capacity.tokens * span / perMillis + 1e-6)
                  }
                }
              })))
            ),
            { numRuns: 5 }
          )
        )
      }), { timeout: 60_000 })
  })

  describe("breaker", () => {
    const options = (onTransition?: (key: string, t: CircuitBreaker.Transition) => void, openMillis = 300) => ({
      tripPolicy: CircuitBreaker.consecutive(1),
      openDuration: Duration.millis(openMillis),
      ...(onTransition === undefined ? {} : { onTransition })
    })

    it.scopedLive("one process trips it, every process sees it open, and one probe closes it for all", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const seen: Array<string> = []
        // open for 1.5 s: B must see it open before it half-opens, and a loaded machine (CI runs
        // the suite on both cores) kept B from looking within 300 ms
        const a = yield* Effect.flatMap(storeOf(prefix), (store) => store.breakers(options(undefined, 1_500)))
        const b = yield* Effect.flatMap(storeOf(prefix), (store) =>
          store.breakers(options((_, t) => seen.push(`${t.from}->${t.to}`), 1_500)))
        const breakerA = yield* a.get("m")
        const breakerB = yield* b.get("m")
        yield* Effect.exit(breakerA.execute(Effect.fail("boom")))
        expect(yield* breakerA.state).toBe("Open")
        expect(yield* eventually(breakerB.state, "Open")).toBe("Open")
        expect(seen).toEqual(["Closed->Open"])
        // half-open in both: A's probe holds the one lease, B is refused meanwhile
        yield* Effect.sleep("1600 millis")
        const release = yield* Deferred.make<void>()
        const probe = yield* Effect.fork(breakerA.execute(Deferred.await(release)))
        yield* Effect.sleep("50 millis")
        const refused = yield* Effect.exit(breakerB.execute(Effect.succeed("b")))
        expect(Exit.isFailure(refused) && refused.cause._tag === "Fail" && refused.cause.error._tag).toBe("CircuitOpen")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(probe)
        expect(yield* eventually(breakerB.state, "Closed")).toBe("Closed")
        expect(yield* breakerB.execute(Effect.succeed("b"))).toBe("b")
      }))

    it.scopedLive("a probe's lease expires when its holder dies, and a process that starts later joins an open circuit", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const a = yield* Effect.flatMap(storeOf(prefix, { lease: Duration.millis(300) }), (store) => store.breakers(options()))
        yield* Effect.exit((yield* a.get("m")).execute(Effect.fail("boom")))
        const late = yield* Effect.flatMap(storeOf(prefix, { lease: Duration.millis(300) }), (store) => store.breakers(options()))
        const breaker = yield* late.get("m")
        expect(yield* breaker.state).toBe("Open")
        yield* Effect.sleep("350 millis")
        // a process that died holding the probe: its lease is there, nobody frees it
        const admin = yield* client()
        const slot = `${SharedStore.identity(prefix, undefined, "m")}:probe:1`
        yield* Effect.promise(() => admin.set(slot, "dead", "PX", 300))
        const refused = yield* Effect.exit(breaker.execute(Effect.succeed("x")))
        expect(Exit.isFailure(refused)).toBe(true)
        yield* Effect.sleep("350 millis")
        expect(yield* breaker.execute(Effect.succeed("x"))).toBe("x")
        expect(yield* breaker.state).toBe("Closed")
      }))
  })

  describe("AgentService", () => {
    it.scopedLive("takes the store from context: two services on one Redis share one budget", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const service = Effect.gen(function*() {
          const store = yield* storeOf(prefix)
          const model = yield* EmbeddedModel.make({ failureRate: 0, timeToFirstToken: Duration.zero, perToken: Duration.zero })
          return yield* AgentService.make({ tokenBudget: { limits: { tokens: 1_000 } } }).pipe(
            Effect.provideService(SharedStore.SharedStore, store),
            Effect.provideService(AiModel.AiModel, model)
          )
        })
        const first = yield* service
        const second = yield* service
        const task = (id: string) => new AgentTask({ id, prompt: "Say hello", maxTokens: 100 })
        const one = yield* first.process(task("a"))
        const two = yield* second.process(task("b"))
        expect([one._tag, two._tag]).toEqual(["TaskSucceeded", "TaskSucceeded"])
        const [budget] = Object.values((yield* second.flow).budgets)
        expect(budget?.shared).toEqual({ store: "redis", processes: 2, mode: "shared" })
        // both calls' usage was taken from the one bucket
        const used = (yield* first.flow).budgets
        expect(Object.values(used)[0]?.dimensions.tokens?.available).toBeLessThan(1_000 - 2 * 5)
      }))
  })

  describe("when Redis fails", () => {
    it.scopedLive("an unreachable Redis: the budget goes on locally and says so once; under \"fail\" it fails with StoreUnavailable", () =>
      Effect.gen(function*() {
        const { hooks, seen } = statuses()
        const local = yield* RedisStore.make({ url: "redis://127.0.0.1:1", prefix: "unreachable" })
        const budget = yield* local.budget("m", { limits: { tokens: 100 } }, hooks)
        const held = yield* budget.reserve({ tokens: 60 })
        yield* held.settle({ tokens: 10 })
        yield* budget.reserve({ tokens: 80 })
        const state = yield* budget.state
        expect(state.shared?.mode).toBe("local")
        expect(state.dimensions.tokens?.available).toBeCloseTo(10, 0)
        expect(seen).toEqual(["local"])

        const failing = yield* RedisStore.make({ url: "redis://127.0.0.1:1", prefix: "unreachable", onStoreError: "fail" })
        const strict = yield* failing.budget("m", { limits: { tokens: 100 } })
        const exit = yield* Effect.exit(strict.reserve({ tokens: 1 }))
        expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag).toBe("StoreUnavailable")
      }))

    it.scopedLive("Redis gone and back: calls go on locally meanwhile, then the budget is shared again", () =>
      Effect.gen(function*() {
        const prefix = Services.uniqueName("wiz_test")
        yield* cleanUp(prefix)
        const { hooks, seen } = statuses()
        const own = yield* client({ enableOfflineQueue: false })
        const store = yield* RedisStore.make({ client: own, prefix, retryAfter: Duration.millis(100) })
        const budget = yield* store.budget("m", { limits: { tokens: 1_000 } }, hooks)
        yield* budget.reserve({ tokens: 100 })
        own.disconnect()
        yield* Effect.sleep("10 millis")
        const during = yield* budget.reserve({ tokens: 100 })
        yield* during.settle({ tokens: 100 })
        expect((yield* budget.state).shared?.mode).toBe("local")
        yield* Effect.promise(() =>
          own.status === "ready"
            ? Promise.resolve()
            : own.status === "end"
            ? own.connect()
            : new Promise((ready) => own.once("ready", ready))
        )
        yield* Effect.sleep("150 millis")
        yield* budget.reserve({ tokens: 100 })
        const state = yield* budget.state
        expect(state.shared?.mode).toBe("shared")
        // Redis still holds what was taken before the outage and after it
        expect(state.dimensions.tokens?.available).toBeLessThan(810)
        expect(seen).toEqual(["local", "shared"])
      }))
  })
})

// The in-memory store is the budget and breaker of before: a quick check that it is the default.
describe("SharedStore.memory", () => {
  it.scoped("makes the in-process budget and breaker", () =>
    Effect.gen(function*() {
      const budget = yield* SharedStore.memory.budget("m", { limits: { tokens: 10 } })
      yield* budget.reserve({ tokens: 4 })
      expect((yield* budget.state).dimensions.tokens?.available).toBe(6)
      expect((yield* budget.state).shared).toBeUndefined()
      const breakers = yield* SharedStore.memory.breakers({ tripPolicy: CircuitBreaker.consecutive(1) })
      yield* Effect.exit(breakers.execute("m")(Effect.fail("boom")))
      expect(yield* breakers.state("m")).toBe("Open")
      expect(yield* SharedStore.memory.processes).toBe(1)
    }))
})
