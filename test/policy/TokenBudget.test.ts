import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Exit, FastCheck as fc, Fiber, FiberId, Option, TestClock } from "effect"
import * as Bulkhead from "../../src/concurrency/Bulkhead.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as TokenBudget from "../../src/policy/TokenBudget.js"
import { noSpin } from "../support/spinGuard.js"

/** Lets every forked fiber run until it is suspended (queued on the budget, or sleeping). */
const settle = TestClock.adjust(0)

const window = (fields: { limit?: number; remaining?: number; reset?: Duration.DurationInput }) =>
  new AiModel.RateLimitWindow({
    ...(fields.limit === undefined ? {} : { limit: fields.limit }),
    ...(fields.remaining === undefined ? {} : { remaining: fields.remaining }),
    ...(fields.reset === undefined ? {} : { reset: Duration.decode(fields.reset) })
  })

/** Forks a reservation of `cost`, recording when it was granted. */
const reserveAt = (budget: TokenBudget.TokenBudget, cost: TokenBudget.Cost, log?: Array<string>, name?: string) =>
  Effect.fork(Effect.tap(budget.reserve(cost), () =>
    Effect.map(Clock.currentTimeMillis, (t) => log?.push(`${name}@${t}`))))

describe("TokenBudget", () => {
  describe("exact under TestClock", () => {
    interface Task {
      readonly gap: number
      readonly tokens: number
      /** Tokens really used, as a fraction of those reserved; undefined: never settled. */
      readonly used: number | undefined
      readonly latency: number
    }

    /**
     * The reference: a FIFO over a continuously refilled bucket per dimension. Each task is
     * granted at the earliest instant at or after its arrival and the previous grant when its
     * cost fits in both dimensions; a settle at grant + latency credits back the unused tokens.
     */
    const reference = (
      dims: ReadonlyArray<{ capacity: number; rate: number }>,
      tasks: ReadonlyArray<Task & { arrival: number; cost: ReadonlyArray<number>; refund: ReadonlyArray<number> }>
    ): Array<number> => {
      const grants: Array<number> = []
      // events so far per dimension, in time order: charges at grants, credits at settles
      const events: Array<{ at: number; amounts: ReadonlyArray<number> }> = []
      const levelAt = (d: number, at: number): number => {
        let level = dims[d]!.capacity
        let t = 0
        for (const event of [...events].filter((e) => e.at <= at).sort((a, b) => a.at - b.at)) {
          level = Math.min(dims[d]!.capacity, level + dims[d]!.rate * (event.at - t)) + event.amounts[d]!
          level = Math.min(dims[d]!.capacity, level)
          t = event.at
        }
        return Math.min(dims[d]!.capacity, level + dims[d]!.rate * (at - t))
      }
      tasks.forEach((task, i) => {
        let at = Math.max(task.arrival, i === 0 ? 0 : grants[i - 1]!)
        // move forward through the credits still to come until the cost fits in every dimension
        for (;;) {
          const credits = events.filter((e) => e.at > at).map((e) => e.at).sort((a, b) => a - b)
          const fit = Math.max(at, ...dims.map((dim, d) => {
            const short = task.cost[d]! - levelAt(d, at)
            return short <= 1e-9 ? at : at + short / dim.rate
          }))
          if (credits.length === 0 || fit <= credits[0]!) {
            at = fit
            break
          }
          at = credits[0]!
        }
        grants.push(at)
        events.push({ at, amounts: task.cost.map((c) => -c) })
        if (task.used !== undefined) events.push({ at: at + task.latency, amounts: task.refund })
      })
      return grants
    }

    const scenario = fc.record({
      requests: fc.record({ limit: fc.integer({ min: 1, max: 4 }), per: fc.integer({ min: 500, max: 3000 }), burst: fc.integer({ min: 1, max: 3 }) }),
      tokens: fc.record({ limit: fc.integer({ min: 20, max: 200 }), per: fc.integer({ min: 500, max: 3000 }) }),
      tasks: fc.array(
        fc.record({
          gap: fc.integer({ min: 1, max: 400 }),
          tokens: fc.integer({ min: 0, max: 20 }),
          used: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
          latency: fc.integer({ min: 1, max: 2000 })
        }),
        { minLength: 1, maxLength: 20 }
      )
    })

    it.effect.prop(
      "over any window, consumption never exceeds capacity + rate × window in any dimension; each grant is at the first instant its cost fits, in FIFO order",
      { scenario },
      ({ scenario: { requests, tasks, tokens } }) =>
        Effect.gen(function* () {
          const budget = yield* TokenBudget.make({
            limits: { requests: { ...requests, per: Duration.millis(requests.per) }, tokens: { limit: tokens.limit, per: Duration.millis(tokens.per) } }
          })
          const dims = [
            { capacity: requests.burst, rate: requests.limit / requests.per },
            { capacity: tokens.limit, rate: tokens.limit / tokens.per }
          ]
          let arrival = 0
          const planned = tasks.map((task) => {
            arrival += task.gap
            const tokensUsed = task.used === undefined ? task.tokens : Math.floor(task.used * task.tokens)
            return { ...task, arrival, cost: [1, task.tokens], refund: [0, task.tokens - tokensUsed], tokensUsed }
          })
          const log: Array<{ at: number; amounts: ReadonlyArray<number> }> = []
          const grants: Array<number> = []
          const fiber = yield* Effect.fork(Effect.forEach(planned, (task, i) =>
            Effect.gen(function* () {
              yield* Effect.sleep(task.arrival)
              const reservation = yield* budget.reserve({ requests: 1, tokens: task.tokens })
              const at = yield* Clock.currentTimeMillis
              grants[i] = at
              log.push({ at, amounts: task.cost })
              if (task.used === undefined) return
              yield* Effect.sleep(task.latency)
              yield* reservation.settle({ tokens: task.tokensUsed })
              log.push({ at: yield* Clock.currentTimeMillis, amounts: task.refund.map((r) => -r) })
            }), { concurrency: "unbounded", discard: true }))
          yield* TestClock.adjust(1_000_000)
          // every task was served (a waiter never woken would still be waiting)
          expect(Option.isSome(yield* Fiber.poll(fiber))).toBe(true)
          yield* Fiber.join(fiber)

          const expected = reference(dims, planned)
          grants.forEach((at, i) => expect(at).toBeCloseTo(expected[i]!, 4))
          // FIFO: grants never go back in time
          grants.forEach((at, i) => i > 0 && expect(at).toBeGreaterThanOrEqual(grants[i - 1]!))
          // every window between two grants
          for (const from of grants) {
            for (const to of grants) {
              if (to < from) continue
              dims.forEach((dim, d) => {
                const consumed = log.filter((e) => e.at >= from && e.at <= to).reduce((sum, e) => sum + e.amounts[d]!, 0)
                expect(consumed).toBeLessThanOrEqual(dim.capacity + dim.rate * (to - from) + 1e-6)
              })
            }
          }
          expect((yield* budget.state).waiting).toBe(0)
        }),
      { fastCheck: { numRuns: 30 } }
    )
  })

  it.effect("a cost above a dimension's capacity fails at once with BudgetExceeded (Effect's RateLimiter waits forever)", () =>
    Effect.gen(function* () {
      const budget = yield* TokenBudget.make({ limits: { tokens: 1000 } })
      const exit = yield* Effect.exit(budget.reserve({ requests: 1, tokens: 1001 }))
      expect(exit).toEqual(Exit.fail(new TokenBudget.BudgetExceeded({ dimension: "tokens", cost: 1001, limit: 1000 })))
      expect(yield* Clock.currentTimeMillis).toBe(0)
      expect((yield* budget.state).dimensions.tokens?.available).toBe(1000)
      // exactly the capacity fits, at once
      yield* budget.reserve({ tokens: 1000 })
      expect((yield* budget.state).dimensions.tokens?.available).toBe(0)
      // a waiter whose cost no longer fits the capacity a report gives fails then, not never
      const waiter = yield* Effect.fork(budget.reserve({ tokens: 800 }))
      yield* settle
      yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 500 }) }))
      expect(yield* Fiber.await(waiter)).toEqual(
        Exit.fail(new TokenBudget.BudgetExceeded({ dimension: "tokens", cost: 800, limit: 500 }))
      )
      expect(yield* budget.state).toMatchObject({ waiting: 0 })
    }))

  it.effect("a refund makes room at once: the waiter it lets through starts at the same instant", () =>
    Effect.gen(function* () {
      // 60 tokens a minute: one a second
      const budget = yield* TokenBudget.make({ limits: { tokens: 60 } })
      const first = yield* budget.reserve({ tokens: 60 })
      const log: Array<string> = []
      yield* reserveAt(budget, { tokens: 40 }, log, "b")
      yield* settle
      yield* TestClock.adjust("5 seconds")
      expect(log).toEqual([])
      // 60 reserved, 20 used: 40 back, plus the 5 refilled
      yield* first.settle({ tokens: 20 })
      yield* settle
      expect(log).toEqual(["b@5000"])
      expect((yield* budget.state).dimensions.tokens?.available).toBeCloseTo(5, 9)
      // settling twice counts once
      yield* first.settle({ tokens: 0 })
      expect((yield* budget.state).dimensions.tokens?.available).toBeCloseTo(5, 9)
    }))

  it.effect("a refund that does not fit the head yet re-plans its wake earlier (not at the old moment)", () =>
    Effect.gen(function* () {
      const budget = yield* TokenBudget.make({ limits: { tokens: 60 } })
      const first = yield* budget.reserve({ tokens: 60 })
      const log: Array<string> = []
      yield* reserveAt(budget, { tokens: 50 }, log, "b")
      yield* settle // b plans to wake at 50 s
      yield* TestClock.adjust("10 seconds")
      yield* first.settle({ tokens: 30 }) // 30 back + 10 refilled: 40, so 10 more seconds
      yield* TestClock.adjust("9999 millis")
      expect(log).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(log).toEqual(["b@20000"])
    }))

  it.effect("an interrupted waiter takes nothing, and the next one behind it is planned from what is there", () =>
    Effect.gen(function* () {
      const budget = yield* TokenBudget.make({ limits: { tokens: 60 } })
      yield* budget.reserve({ tokens: 60 })
      const log: Array<string> = []
      const big = yield* reserveAt(budget, { tokens: 50 }, log, "big")
      const small = yield* reserveAt(budget, { tokens: 10 }, log, "small")
      yield* settle
      expect((yield* budget.state).waiting).toBe(2)
      yield* TestClock.adjust("3 seconds")
      expect(Exit.isInterrupted(yield* Fiber.interrupt(big))).toBe(true)
      expect((yield* budget.state).waiting).toBe(1)
      // small needed 10 tokens: at 10 s, not at 50 + 10 s
      yield* TestClock.adjust("6999 millis")
      expect(log).toEqual([])
      yield* TestClock.adjust("1 millis")
      expect(log).toEqual(["small@10000"])
      yield* Fiber.join(small)
      expect((yield* budget.state).dimensions.tokens?.available).toBeCloseTo(0, 9)
    }))

  describe("a waiter interrupted as it is granted gives its reservation back whole", () => {
    const race = (order: "interrupt, then refund" | "refund, then interrupt") =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ limits: { tokens: 60 } })
        const first = yield* budget.reserve({ tokens: 60 })
        const waiterFiber = yield* Deferred.make<Fiber.RuntimeFiber<TokenBudget.Reservation, TokenBudget.BudgetExceeded>>()
        const interruptWaiter = Effect.flatMap(Deferred.await(waiterFiber), (f) => Fiber.interruptAsFork(f, FiberId.none))
        const waiter = yield* Effect.fork(budget.reserve({ tokens: 40 }))
        yield* settle
        yield* Deferred.succeed(waiterFiber, waiter)
        // the refund grants the waiter in the same synchronous step as its interruption
        yield* order === "interrupt, then refund"
          ? Effect.zipRight(interruptWaiter, first.release)
          : Effect.zipRight(first.release, interruptWaiter)
        expect(Exit.isInterrupted(yield* Fiber.await(waiter))).toBe(true)
        expect((yield* budget.state).dimensions.tokens?.available).toBe(60)
        expect((yield* budget.state).waiting).toBe(0)
      })
    it.effect("interrupt, then refund", () => race("interrupt, then refund"))
    it.effect("refund, then interrupt", () => race("refund, then interrupt"))
  })

  it.effect("FIFO: a small cost never overtakes a large one waiting ahead of it (no starvation)", () =>
    Effect.gen(function* () {
      const budget = yield* TokenBudget.make({ limits: { tokens: 60 } })
      yield* budget.reserve({ tokens: 50 })
      const log: Array<string> = []
      yield* reserveAt(budget, { tokens: 40 }, log, "large")
      yield* settle
      yield* reserveAt(budget, { tokens: 5 }, log, "small") // would fit now: 10 left
      yield* settle
      expect(log).toEqual([])
      yield* TestClock.adjust("30 seconds") // 10 + 30 = 40: large, then small 5 s later
      yield* TestClock.adjust("5 seconds")
      expect(log).toEqual(["large@30000", "small@35000"])
    }))

  describe("adopting a provider's report", () => {
    it.effect("a budget never told the limits takes them from a report: capacity, the rate per minute, and what is left", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make()
        // nothing limited yet: any cost passes
        yield* budget.reserve({ requests: 1, tokens: 1_000_000 })
        expect((yield* budget.state).dimensions).toEqual({})
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 600, remaining: 100 }), requests: window({ limit: 60 }) }))
        expect((yield* budget.state).dimensions).toEqual({
          tokens: { capacity: 600, available: 100, perSecond: 10 },
          requests: { capacity: 60, available: 60, perSecond: 1 }
        })
        const log: Array<string> = []
        yield* reserveAt(budget, { requests: 1, tokens: 200 }, log, "a")
        yield* TestClock.adjust("9999 millis")
        expect(log).toEqual([])
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["a@10000"])
      }))

    it.effect("never told the limits, it lets one call through until the first answer (a released probe passes the turn on); given limits, it does not probe", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make()
        const log: Array<string> = []
        const first = yield* budget.reserve({ requests: 1, tokens: 100 })
        yield* reserveAt(budget, { requests: 1, tokens: 100 }, log, "second")
        yield* reserveAt(budget, { requests: 1, tokens: 100 }, log, "third")
        yield* TestClock.adjust("1 minute")
        expect(log).toEqual([])
        yield* first.release // never sent: the next caller probes
        yield* settle
        expect(log).toEqual(["second@60000"])
        yield* TestClock.adjust("1 second")
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 10_000 }) }))
        yield* settle
        expect(log).toEqual(["second@60000", "third@61000"])
        const given = yield* TokenBudget.make({ limits: { tokens: 1000 } })
        yield* given.reserve({ tokens: 10 })
        yield* given.reserve({ tokens: 10 })
        expect((yield* given.state).dimensions.tokens?.available).toBe(980)
      }))

    it.effect("your own limit is a ceiling a report may lower but never raise; remaining only ever lowers the level", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ limits: { tokens: 300 } })
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 600, remaining: 500 }) }))
        expect((yield* budget.state).dimensions.tokens).toEqual({ capacity: 300, available: 300, perSecond: 5 })
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 120, remaining: 100 }) }))
        expect((yield* budget.state).dimensions.tokens).toEqual({ capacity: 120, available: 100, perSecond: 2 })
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ remaining: 110 }) }))
        expect((yield* budget.state).dimensions.tokens?.available).toBe(100)
      }))

    it.effect("a reset longer than the budget's own refill would take slows the refill to match", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make()
        // 600 a minute would refill in 60 s; the provider says it is whole only in 120 s
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 600, remaining: 0, reset: "120 seconds" }) }))
        expect((yield* budget.state).dimensions.tokens).toEqual({ capacity: 600, available: 0, perSecond: 5 })
      }))

    it.effect("issue 18.6: when a 429 says its window resets at T, the budget lets calls through at T, whatever rate an older, larger report left", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make()
        // an older report: half of 10,000 tokens left, whole again in 30 s
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ limit: 10_000, remaining: 5_000, reset: "30 seconds" }) }))
        yield* budget.reserve({ tokens: 4_000 })
        // then a 429: no tokens left, the window resets in 2.5 s
        yield* budget.refused(new AiModel.RateLimited({
          model: "m",
          limit: "tokens",
          retryAfter: Duration.millis(2500),
          rateLimits: new AiModel.RateLimits({ tokens: window({ limit: 10_000, remaining: 0, reset: "2500 millis" }) })
        }))
        const log: Array<string> = []
        yield* reserveAt(budget, { tokens: 8_000 }, log, "after the reset")
        yield* reserveAt(budget, { tokens: 3_000 }, log, "then at the sustained rate")
        yield* TestClock.adjust("2499 millis")
        expect(log).toEqual([])
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["after the reset@2500"])
        // past T the window refills at 10,000 a minute again: 1,000 more tokens take 6 s
        yield* TestClock.adjust("5999 millis")
        expect(log).toEqual(["after the reset@2500"])
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["after the reset@2500", "then at the sustained rate@8500"])
      }))

    it.effect("a reset reported on a success refills the budget by then too, counting what is taken meanwhile", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ limits: { tokens: 600 } })
        yield* budget.adopt(new AiModel.RateLimits({ tokens: window({ remaining: 0, reset: "6 seconds" }) }))
        yield* TestClock.adjust("3 seconds")
        expect((yield* budget.state).dimensions.tokens?.available).toBeCloseTo(300)
        yield* budget.reserve({ tokens: 300 })
        yield* TestClock.adjust("3 seconds")
        expect((yield* budget.state).dimensions.tokens?.available).toBeCloseTo(300)
      }))

    it.effect("a budget never told the limits learns them from the provider's first answers and is never refused, where the same calls without it get 429s", () =>
      Effect.gen(function* () {
        const prompt = "The circuit breaker opens after repeated failures. Retries use exponential backoff with jitter. " +
          "A circuit breaker protects the provider from retry storms."
        const calls = Array.from({ length: 150 }, () => new AiModel.CompletionRequest({ prompt, maxTokens: 100 }))
        const run = (metered: boolean) =>
          Effect.gen(function* () {
            // 6,000 tokens a minute (100 a second), 8 calls at a time
            const model = yield* EmbeddedModel.make({ seed: 1, jitter: 0, timeToFirstToken: "100 millis", perToken: "1 millis", tokensPerMinute: 6000 })
            const budget = yield* TokenBudget.make()
            const bulkhead = yield* Bulkhead.make({ permits: 8 })
            const fiber = yield* Effect.fork(Effect.forEach(calls, (call) => {
              const attempt = bulkhead.withPermit(model.generate(call))
              return Effect.either(metered ? budget.meter(call)(attempt) : attempt)
            }, { concurrency: "unbounded" }))
            yield* TestClock.adjust("1 second")
            const learned = (yield* budget.state).dimensions.tokens
            yield* TestClock.adjust("1 hour")
            const results = yield* Fiber.join(fiber)
            const refused = results.filter((r) => r._tag === "Left" && r.left._tag === "RateLimited").length
            return { refused, answered: results.filter((r) => r._tag === "Right").length, learned }
          })
        const without = yield* run(false)
        expect(without.refused).toBeGreaterThan(50)
        yield* TestClock.setTime(0)
        const metered = yield* run(true)
        expect(metered).toMatchObject({ refused: 0, answered: 150 })
        expect(metered.learned).toMatchObject({ capacity: 6000, perSecond: 100 })
      }))

    it.effect("a 429 holds its dimension until its retryAfter, even one whose limit is unknown", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ probe: false })
        yield* budget.refused(new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.seconds(5) }))
        const log: Array<string> = []
        yield* reserveAt(budget, { requests: 1, tokens: 10 }, log, "a")
        yield* reserveAt(budget, { tokens: 10 }, log, "b") // behind a, FIFO
        yield* TestClock.adjust("4999 millis")
        expect(log).toEqual([])
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["a@5000", "b@5000"])
      }))

    it.effect("holdUnknown: false: a 429 holds only a dimension whose limit the provider reported, not one limited by our own ceiling alone", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ probe: false, holdUnknown: false, limits: { tokens: 1_000_000 } })
        // no limit at all
        yield* budget.refused(new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.seconds(5) }))
        const log: Array<string> = []
        yield* reserveAt(budget, { requests: 1, tokens: 10 }, log, "a")
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["a@0"])
        // our own limit only: it says nothing of the provider's window, so only the refused call waits
        yield* budget.refused(new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.seconds(5) }))
        yield* reserveAt(budget, { tokens: 10 }, log, "b")
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["a@0", "b@1"])
        // once the provider has reported that limit, its 429 holds it
        yield* budget.adopt(new AiModel.RateLimits({ tokens: new AiModel.RateLimitWindow({ limit: 600_000 }) }))
        yield* budget.refused(new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.seconds(5) }))
        yield* reserveAt(budget, { tokens: 10 }, log, "c")
        yield* TestClock.adjust("4999 millis")
        expect(log).toEqual(["a@0", "b@1"])
        yield* TestClock.adjust("1 millis")
        expect(log).toEqual(["a@0", "b@1", "c@5002"])
      }))
  })

  describe("meter", () => {
    const request = new AiModel.CompletionRequest({ prompt: "one two six ten", maxTokens: 100 })
    const usage = new AiModel.Usage({ promptTokens: 4, completionTokens: 16 })
    const completion = (rateLimits?: AiModel.RateLimits) =>
      new AiModel.Completion({ text: "x", finishReason: "stop", usage, model: "m", ...(rateLimits === undefined ? {} : { rateLimits }) })

    it("requestCost reserves prompt and system tokens plus maxTokens; usageCost is what was used", () => {
      expect(TokenBudget.requestCost(request)).toEqual({ requests: 1, tokens: 104, inputTokens: 4, outputTokens: 100 })
      expect(TokenBudget.requestCost(new AiModel.CompletionRequest({ prompt: "one two", system: "be brief", maxTokens: 10 })))
        .toEqual({ requests: 1, tokens: 15, inputTokens: 5, outputTokens: 10 })
      expect(TokenBudget.usageCost(usage)).toEqual({ requests: 1, tokens: 20, inputTokens: 4, outputTokens: 16 })
    })

    it("requestCost counts a continuation as input, as the provider does (the text it continues is sent with the prompt)", () => {
      const continued = new AiModel.CompletionRequest({ prompt: "one two", system: "be brief", maxTokens: 10, continuation: "The answer so" })
      expect(TokenBudget.requestCost(continued)).toEqual({ requests: 1, tokens: 19, inputTokens: 9, outputTokens: 10 })
      expect(TokenBudget.requestCost(new AiModel.CompletionRequest({ prompt: "one two", maxTokens: 10, continuation: "" })))
        .toEqual(TokenBudget.requestCost(new AiModel.CompletionRequest({ prompt: "one two", maxTokens: 10 })))
    })

    it.effect("reserves the request's cost, settles with the usage and adopts the completion's report", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ limits: { tokens: 1000 } })
        const seen = yield* Effect.makeLatch(false)
        const during = yield* Effect.fork(budget.meter(request)(Effect.zipRight(seen.await, Effect.succeed(completion()))))
        yield* settle
        expect((yield* budget.state).dimensions.tokens?.available).toBe(896)
        yield* seen.open
        yield* Fiber.join(during)
        expect((yield* budget.state).dimensions.tokens?.available).toBe(980)
        yield* budget.meter(request)(Effect.succeed(completion(new AiModel.RateLimits({ tokens: window({ limit: 900, remaining: 500 }) }))))
        expect((yield* budget.state).dimensions.tokens).toEqual({ capacity: 900, available: 500, perSecond: 15 })
      }))

    it.effect("a refused call gives its reservation back and teaches the budget; a timed-out one keeps it", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ limits: { tokens: 1000 } })
        const limited = new AiModel.RateLimited({
          model: "m",
          limit: "tokens",
          retryAfter: Duration.seconds(2),
          rateLimits: new AiModel.RateLimits({ tokens: window({ limit: 1000, remaining: 300 }) })
        })
        expect(yield* Effect.flip(budget.meter(request)(Effect.fail(limited)))).toBe(limited)
        expect((yield* budget.state).dimensions.tokens?.available).toBe(300)
        const held = yield* Effect.fork(budget.reserve({ tokens: 1 }))
        yield* TestClock.adjust("1999 millis")
        expect(Option.isNone(yield* Fiber.poll(held))).toBe(true)
        yield* TestClock.adjust("1 millis")
        yield* Fiber.join(held)
        const timeout = new AiModel.ModelTimeout({ model: "m", timeout: Duration.seconds(1) })
        const before = (yield* budget.state).dimensions.tokens!.available
        expect(yield* Effect.flip(budget.meter(request)(Effect.fail(timeout)))).toBe(timeout)
        expect((yield* budget.state).dimensions.tokens?.available).toBeCloseTo(before - 104, 9)
      }))

    it.effect("a request that can never fit fails with BudgetExceeded without being sent", () =>
      Effect.gen(function* () {
        const budget = yield* TokenBudget.make({ limits: { tokens: 50 } })
        let sent = 0
        const error = yield* Effect.flip(budget.meter(request)(Effect.sync(() => ++sent).pipe(Effect.as(completion()))))
        expect(error).toEqual(new TokenBudget.BudgetExceeded({ dimension: "tokens", cost: 104, limit: 50 }))
        expect(error.message).toBe("a cost of 104 tokens can never fit a budget of 50")
        expect(sent).toBe(0)
      }))
  })

  it.effect("bad costs and limits are defects", () =>
    Effect.gen(function* () {
      const budget = yield* TokenBudget.make()
      for (const tokens of [-1, Number.NaN, Infinity]) {
        const exit = yield* Effect.exit(budget.reserve({ tokens }))
        expect(Exit.isFailure(exit) && exit.cause._tag === "Die").toBe(true)
      }
      const exit = yield* Effect.exit(TokenBudget.make({ limits: { tokens: 0 } }))
      expect(Exit.isFailure(exit) && exit.cause._tag === "Die").toBe(true)
    }))

  it.effect.prop(
    "issue 17.1: a reservation held by a fractional Retry-After from a fractional time is granted exactly when it ends, without spinning",
    {
      from: fc.double({ min: 0, max: 1e7, noNaN: true }),
      retryAfter: fc.double({ min: 1e-6, max: 1e5, noNaN: true }),
      early: fc.double({ min: 0, max: 1, minExcluded: true, maxExcluded: true, noNaN: true })
    },
    ({ early, from, retryAfter }) =>
      Effect.gen(function*() {
        const budget = yield* TokenBudget.make({ limits: { requests: 1_000 } })
        yield* TestClock.setTime(from)
        const wait = Duration.millis(retryAfter)
        yield* budget.refused(new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: wait }))
        const heldUntil = from + Duration.toMillis(wait)
        const waiter = yield* Effect.fork(Effect.zipRight(budget.reserve({ requests: 1 }), Clock.currentTimeMillis))
        yield* settle
        const before = from + early * Duration.toMillis(wait)
        if (before > from && before < heldUntil) {
          yield* TestClock.setTime(before)
          expect(waiter.unsafePoll()).toBeNull()
        }
        yield* TestClock.setTime(heldUntil)
        expect(waiter.unsafePoll()).toStrictEqual(Exit.succeed(heldUntil))
      }).pipe(noSpin(1000)),
    { fastCheck: { numRuns: 25 } }
  )
})
