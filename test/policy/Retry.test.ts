import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, FastCheck as fc, Random, Schema, TestClock } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as Budget from "../../src/policy/Budget.js"
import * as Retry from "../../src/policy/Retry.js"
import * as CircuitBreaker from "../../src/policy/CircuitBreaker.js"
import { fractional, noSpin } from "../support/spinGuard.js"

/** A breaker-style error that is not a model error but carries a Retry-After. */
class CircuitOpen extends Schema.TaggedError<CircuitOpen>()("CircuitOpen", {
  retryAfter: Schema.DurationFromSelf
}) {}

const overloaded = (n: number) => new AiModel.Overloaded({ model: `m${n}` })

/**
 * An attempt that records the Clock time it starts at and then plays the next outcome
 * (the last one repeats): an error fails it, "ok" succeeds with the attempt number.
 */
const scripted = <E>(outcomes: ReadonlyArray<E | "ok">) => {
  const times: Array<number> = []
  const attempt: Effect.Effect<number, E> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    times.push(now)
    const outcome = outcomes[Math.min(times.length, outcomes.length) - 1]!
    return outcome === "ok" ? Effect.succeed(times.length) : Effect.fail(outcome)
  })
  return { attempt, times }
}

/** Runs `self` in a fiber while the TestClock moves far ahead; returns its exit and end time. */
const settle = <A, E>(self: Effect.Effect<A, E>, seed: number = 7) =>
  Effect.gen(function*() {
    const fiber = yield* self.pipe(
      Effect.exit,
      Effect.zip(Clock.currentTimeMillis),
      Effect.withRandom(Random.make(seed)),
      Effect.fork
    )
    yield* TestClock.adjust("10 hours")
    return yield* Fiber.join(fiber)
  })

/** The first `n` numbers `Random.make(seed)` draws. */
const draws = (seed: number, n: number) => {
  const random = Random.make(seed)
  return Effect.all(Array.from({ length: n }, () => random.next))
}

const gaps = (times: ReadonlyArray<number>) => times.slice(1).map((t, i) => t - times[i]!)

describe("Retry", () => {
  it.effect("seed bug 4: attempt times are exact for a seed: min(base·factor^n, cap) × full-jitter draws", () =>
    Effect.gen(function*() {
      const { attempt, times } = scripted([overloaded(1)])
      const policy = Retry.make({ base: "100 millis", factor: 2, cap: "350 millis", maxAttempts: 5 })
      const [exit, end] = yield* settle(policy.apply(attempt), 42)

      expect(exit).toStrictEqual(Exit.fail(overloaded(1)))
      expect(times).toStrictEqual([0, 74, 210, 357, 688])
      expect(end).toBe(688)
      const r = yield* draws(42, 4)
      const expected = [100, 200, 350, 350].map((d, i) => Math.round(d * r[i]!))
      expect(gaps(times)).toStrictEqual(expected)
    }))

  it.effect.prop(
    "seed bug 4 (no jitter): full jitter stays in [0, d], equal in [d/2, d]",
    { seed: fc.integer(), jitter: fc.constantFrom("full" as const, "equal" as const) },
    ({ jitter, seed }) =>
      Effect.gen(function*() {
        const { attempt, times } = scripted([overloaded(1)])
        const policy = Retry.make({ base: "1 second", cap: "5 seconds", maxAttempts: 6, jitter })
        yield* settle(policy.apply(attempt), seed)
        const capped = [1000, 2000, 4000, 5000, 5000]
        expect(times).toHaveLength(6)
        gaps(times).forEach((gap, i) => {
          const d = capped[i]!
          expect(gap).toBeGreaterThanOrEqual(jitter === "full" ? 0 : d / 2)
          expect(gap).toBeLessThanOrEqual(d)
        })
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect("jitter none is exact, and cap bounds the backoff: 100, 200, 400, 500, 500", () =>
    Effect.gen(function*() {
      const { attempt, times } = scripted([overloaded(1)])
      const policy = Retry.make({ base: "100 millis", cap: "500 millis", maxAttempts: 6, jitter: "none" })
      yield* settle(policy.apply(attempt))
      expect(gaps(times)).toStrictEqual([100, 200, 400, 500, 500])
    }))

  it.effect("Retry.schedule is the backoff alone, usable with Effect.retry: delays, cap, maxAttempts - 1 retries", () =>
    Effect.gen(function*() {
      const { attempt, times } = scripted([overloaded(1)])
      const backoff = Retry.schedule({ base: "1 second", factor: 3, cap: "20 seconds", maxAttempts: 5, jitter: "none" })
      const [exit] = yield* settle(Effect.retry(attempt, backoff))
      expect(exit).toStrictEqual(Exit.fail(overloaded(1)))
      expect(gaps(times)).toStrictEqual([1000, 3000, 9000, 20000])
    }))

  it.effect("maxAttempts: 3 attempts in all, then the last attempt's own error, unwrapped", () =>
    Effect.gen(function*() {
      const errors = [overloaded(1), overloaded(2), overloaded(3)]
      const { attempt, times } = scripted(errors)
      const [exit, end] = yield* settle(Retry.retry(attempt, Retry.make({ maxAttempts: 3, jitter: "none" })))
      expect(times).toStrictEqual([0, 500, 1500])
      expect(end).toBe(1500)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error).toBe(errors[2])
    }))

  it.effect("seed bug 4: a 400 (InvalidRequest) is not retried", () =>
    Effect.gen(function*() {
      const error = new AiModel.InvalidRequest({ model: "m", reason: "prompt too long" })
      const { attempt, times } = scripted([error, "ok"])
      const [exit, end] = yield* settle(attempt.pipe(Retry.retry(Retry.make())))
      expect(exit).toStrictEqual(Exit.fail(error))
      expect(times).toStrictEqual([0])
      expect(end).toBe(0)
    }))

  it.effect("seed bug 4: QuotaExhausted is not retried", () =>
    Effect.gen(function*() {
      const error = new AiModel.QuotaExhausted({ model: "m", reason: "insufficient_quota" })
      const { attempt, times } = scripted([error, "ok"])
      const [exit] = yield* settle(Retry.make().apply(attempt))
      expect(exit).toStrictEqual(Exit.fail(error))
      expect(times).toStrictEqual([0])
    }))

  it.effect("AuthenticationFailed (a 401) is not retried: the same key fails the same way", () =>
    Effect.gen(function*() {
      const error = new AiModel.AuthenticationFailed({ model: "m", status: 401, reason: "invalid api key" })
      const { attempt, times } = scripted([error, "ok"])
      const [exit] = yield* settle(Retry.make().apply(attempt))
      expect(exit).toStrictEqual(Exit.fail(error))
      expect(times).toStrictEqual([0])
    }))

  it.effect("any error type works, untagged included: a plain Error is retried, the classifier decides", () =>
    Effect.gen(function*() {
      const { attempt, times } = scripted<Error>([new Error("flaky"), "ok"])
      const [exit] = yield* settle(Retry.make({ jitter: "none" }).apply(attempt))
      expect(exit).toStrictEqual(Exit.succeed(2))
      expect(times).toStrictEqual([0, 500])
      const fatal = scripted<Error>([new TypeError("bug")])
      const classified = Retry.make<Error>({ isRetryable: (error) => !(error instanceof TypeError) })
      const [failed] = yield* settle(classified.apply(fatal.attempt))
      expect(Exit.isFailure(failed)).toBe(true)
      expect(fatal.times).toHaveLength(1)
    }))

  it.effect("other tagged errors (ModelTimeout, a breaker's CircuitOpen) are retried by default", () =>
    Effect.gen(function*() {
      const timeout = new AiModel.ModelTimeout({ model: "m", timeout: Duration.seconds(1) })
      const open = new CircuitOpen({ retryAfter: Duration.seconds(3) })
      const { attempt, times } = scripted<AiModel.ModelTimeout | CircuitOpen>([timeout, open, "ok"])
      const [exit] = yield* settle(Retry.make({ jitter: "none" }).apply(attempt))
      expect(exit).toStrictEqual(Exit.succeed(3))
      // no backoff after the timeout (its 1 s already spaced the calls by more than 500 ms); the
      // open breaker's 3 s outweighs the 1 s backoff
      expect(times).toStrictEqual([0, 0, 3000])
    }))

  it.effect("issue 17.9: the time a timed-out attempt waited counts against the backoff after it; other errors back off in full", () =>
    Effect.gen(function*() {
      const timedOut = (millis: number) => new AiModel.ModelTimeout({ model: "m", timeout: Duration.millis(millis) })
      const policy = Retry.make<AiModel.ModelError>({ jitter: "none", maxAttempts: 5 })
      // delays 500, 1000, 2000, 4000: after a 300 ms timeout 200 ms is left of the first; a
      // 5 s timeout covers the second; an Overloaded backs off its full 2 s; 4 s - 1 s = 3 s
      const { attempt, times } = scripted<AiModel.ModelError>([
        timedOut(300),
        timedOut(5_000),
        new AiModel.Overloaded({ model: "m" }),
        timedOut(1_000),
        "ok"
      ])
      const [exit] = yield* settle(policy.apply(attempt))
      expect(exit).toStrictEqual(Exit.succeed(5))
      expect(times).toStrictEqual([0, 200, 200, 2200, 5200])
      // `waited` decides what counts: here nothing does
      const plain = scripted<AiModel.ModelError>([timedOut(5_000), "ok"])
      const [again] = yield* settle(Retry.make<AiModel.ModelError>({ jitter: "none", waited: () => undefined }).apply(plain.attempt))
      expect(again).toStrictEqual(Exit.succeed(2))
      expect(plain.times.map((t) => t - plain.times[0]!)).toStrictEqual([0, 500])
    }))

  it.effect("isRetryable: a custom predicate (AiModel.isTransient) decides", () =>
    Effect.gen(function*() {
      const policy = Retry.make({ isRetryable: (e: AiModel.ModelError) => e._tag === "RateLimited" })
      const { attempt, times } = scripted<AiModel.ModelError>([overloaded(1), "ok"])
      const [exit] = yield* settle(policy.apply(attempt))
      expect(exit).toStrictEqual(Exit.fail(overloaded(1)))
      expect(times).toStrictEqual([0])
      const transient = Retry.make({ isRetryable: AiModel.isTransient, jitter: "none" })
      const second = scripted<AiModel.ModelError>([overloaded(1), "ok"])
      expect((yield* settle(transient.apply(second.attempt)))[0]).toStrictEqual(Exit.succeed(2))
    }))

  it.effect("pitfall: Retry-After is honoured: the next attempt starts no earlier than retryAfter", () =>
    Effect.gen(function*() {
      const limited = new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.seconds(5) })
      const { attempt, times } = scripted([limited, "ok"])
      const [exit] = yield* settle(Retry.make({ base: "100 millis" }).apply(attempt))
      expect(exit).toStrictEqual(Exit.succeed(2))
      expect(times).toStrictEqual([0, 5000])
      // a Retry-After shorter than the backoff does not shorten it
      const short = new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.millis(50) })
      const second = scripted([short, "ok"])
      yield* settle(Retry.make({ base: "100 millis", jitter: "none" }).apply(second.attempt))
      expect(second.times).toStrictEqual([36000000, 36000100])
    }))

  it.effect("pitfall: a Retry-After of hours is not slept through: fails at once with that same error", () =>
    Effect.gen(function*() {
      const limited = new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.hours(2) })
      const { attempt, times } = scripted([limited, "ok"])
      const events: Array<Retry.GiveUpEvent<AiModel.RateLimited>> = []
      const policy = Retry.make<AiModel.RateLimited>({ onGiveUp: (event) => Effect.sync(() => events.push(event)) })
      // no fork, no clock adjustment: if the policy slept, this would never finish
      const exit = yield* Effect.exit(policy.apply(attempt))
      expect(exit._tag === "Failure" && exit.cause._tag === "Fail" && exit.cause.error).toBe(limited)
      expect(times).toStrictEqual([0])
      expect(yield* Clock.currentTimeMillis).toBe(0)
      expect(events).toStrictEqual([{ reason: "retry-after-too-long", attempts: 1, error: limited }])
      // exactly retryAfterMax is still waited out
      const second = scripted([new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.minutes(1) }), "ok"])
      expect((yield* settle(Retry.make().apply(second.attempt)))[0]).toStrictEqual(Exit.succeed(2))
      expect(second.times).toStrictEqual([0, 60000])
    }))

  it.effect.prop(
    "deadline is never overrun, and with attemptTimeout no attempt starts that could not finish",
    {
      outcomes: fc.array(
        fc.record({
          latency: fc.integer({ min: 0, max: 3000 }),
          result: fc.constantFrom("ok", "overloaded", "rate-limited", "invalid")
        }),
        { minLength: 1, maxLength: 8 }
      ),
      retryAfter: fc.integer({ min: 0, max: 4000 }),
      deadline: fc.integer({ min: 1, max: 8000 }),
      attemptTimeout: fc.option(fc.integer({ min: 1, max: 3000 }), { nil: undefined }),
      base: fc.integer({ min: 0, max: 1500 }),
      jitter: fc.constantFrom("full" as const, "equal" as const, "none" as const),
      seed: fc.integer()
    },
    ({ attemptTimeout, base, deadline, jitter, outcomes, retryAfter, seed }) =>
      Effect.gen(function*() {
        const starts: Array<number> = []
        const attempt = Effect.gen(function*() {
          starts.push(yield* Clock.currentTimeMillis)
          const { latency, result } = outcomes[Math.min(starts.length, outcomes.length) - 1]!
          yield* Effect.sleep(latency)
          switch (result) {
            case "ok":
              return starts.length
            case "overloaded":
              return yield* new AiModel.Overloaded({ model: "m" })
            case "rate-limited":
              return yield* new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.millis(retryAfter) })
            case "invalid":
              return yield* new AiModel.InvalidRequest({ model: "m", reason: "bad" })
          }
        })
        const bounded = attemptTimeout === undefined ? attempt : attempt.pipe(
          Effect.timeoutFail({
            duration: attemptTimeout,
            onTimeout: () => new AiModel.ModelTimeout({ model: "m", timeout: Duration.millis(attemptTimeout) })
          })
        )
        const policy = Retry.make({
          base,
          jitter,
          maxAttempts: 8,
          deadline,
          ...(attemptTimeout === undefined ? {} : { attemptTimeout })
        })
        const [exit, end] = yield* settle(policy.apply(bounded), seed)

        expect(end).toBeLessThanOrEqual(deadline)
        expect(starts[0]).toBe(0)
        // An attempt timeout no shorter than the deadline could never fit, so it is not used.
        const fitting = attemptTimeout !== undefined && attemptTimeout < deadline ? attemptTimeout : undefined
        for (const start of starts.slice(1)) {
          if (fitting === undefined) expect(start).toBeLessThan(deadline)
          else expect(start + fitting).toBeLessThanOrEqual(deadline)
        }
        if (Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag === "DeadlineExceeded") {
          expect(end).toBe(deadline)
          expect(exit.cause.error.attempts).toBe(starts.length)
          expect(Duration.toMillis(exit.cause.error.deadline)).toBe(deadline)
        }
      }),
    { fastCheck: { numRuns: 100 } }
  )

  it.effect("deadline: an attempt still running at the deadline is interrupted with DeadlineExceeded", () =>
    Effect.gen(function*() {
      let interrupted = false
      const events: Array<Retry.GiveUpEvent<unknown>> = []
      const hanging = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => (interrupted = true))))
      const policy = Retry.make({ deadline: "1 second", onGiveUp: (event) => Effect.sync(() => events.push(event)) })
      const [exit, end] = yield* settle(policy.apply(hanging))
      const error = new Retry.DeadlineExceeded({ deadline: Duration.seconds(1), attempts: 1 })
      expect(exit).toStrictEqual(Exit.fail(error))
      expect(error.message).toBe("no result within 1s (1 attempts)")
      expect(end).toBe(1000)
      expect(interrupted).toBe(true)
      expect(events).toStrictEqual([{ reason: "deadline", attempts: 1, error }])
    }))

  it.effect("deadline: a retry that could not finish in time is not started; the call fails at once", () =>
    Effect.gen(function*() {
      const { attempt, times } = scripted([overloaded(1), "ok"])
      const events: Array<Retry.GiveUpEvent<AiModel.Overloaded>> = []
      const policy = Retry.make<AiModel.Overloaded>({
        base: "600 millis",
        jitter: "none",
        deadline: "1 second",
        attemptTimeout: "500 millis",
        onGiveUp: (event) => Effect.sync(() => events.push(event))
      })
      const [exit, end] = yield* settle(policy.apply(attempt))
      expect(exit).toStrictEqual(Exit.fail(overloaded(1)))
      expect(times).toStrictEqual([0])
      expect(end).toBe(0)
      expect(events).toStrictEqual([{ reason: "deadline", attempts: 1, error: overloaded(1) }])
      // 400 ms + 500 ms fits in 1 s
      const second = scripted([overloaded(1), "ok"])
      const fits = Retry.make({ base: "400 millis", jitter: "none", deadline: "1 second", attemptTimeout: "500 millis" })
      expect((yield* settle(fits.apply(second.attempt)))[0]).toStrictEqual(Exit.succeed(2))
    }))

  it.effect("deadline: an attempt timeout that could never fit (infinite, or longer than the deadline) does not forbid retries", () =>
    Effect.gen(function*() {
      for (const attemptTimeout of [Duration.infinity, Duration.seconds(30), Duration.seconds(1)]) {
        const { attempt, times } = scripted([overloaded(1), overloaded(1), "ok"])
        const policy = Retry.make({ base: "100 millis", jitter: "none", deadline: "1 second", attemptTimeout })
        expect((yield* settle(policy.apply(attempt)))[0]).toStrictEqual(Exit.succeed(3))
        expect(gaps(times)).toStrictEqual([100, 200])
      }
    }))

  it.effect("pitfall: retry storm: 200 calls to a failing model with ratio 0.1 make exactly 25 retries, not 600", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 0.5, window: "10 seconds" })
      const reasons: Array<Retry.GiveUpReason> = []
      const policy = Retry.make({
        base: 0,
        maxAttempts: 4,
        budget,
        onGiveUp: ({ reason }) => Effect.sync(() => reasons.push(reason))
      })
      let attempts = 0
      const outage = Effect.suspend(() => {
        attempts += 1
        return Effect.fail(new AiModel.Unavailable({ model: "m", reason: "connection refused" }))
      })
      yield* Effect.forEach(Array.from({ length: 200 }), () => Effect.exit(policy.apply(outage)), { discard: true })
      // floor 0.5/s × 10 s = 5, plus 0.1 × 200 first attempts = 20
      expect(attempts - 200).toBe(25)
      // the first call spends 3 of the 5.1 it finds; every later call finds less than 2
      expect(reasons).toHaveLength(200)
      expect(reasons.filter((r) => r === "max-attempts")).toHaveLength(1)
      expect(reasons.filter((r) => r === "budget")).toHaveLength(199)
      expect(yield* budget.available).toBe(0)
    }))

  it.effect("a retry after CircuitOpen is not charged to the budget: the refused attempt never reached the provider", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0, minPerSecond: 0 })
      const { attempt, times } = scripted<CircuitOpen | AiModel.Overloaded>([
        new CircuitOpen({ retryAfter: Duration.millis(300) }),
        new CircuitOpen({ retryAfter: Duration.millis(300) }),
        overloaded(1),
        "ok"
      ])
      const [exit] = yield* settle(Retry.make({ base: "100 millis", jitter: "none", budget }).apply(attempt))
      // Two free retries after CircuitOpen; the retry after Overloaded finds an empty budget.
      expect(exit).toStrictEqual(Exit.fail(overloaded(1)))
      expect(times).toStrictEqual([0, 300, 600])
    }))

  it.effect("pitfall: the backoff sleep is cancellable: interrupting it ends the call with no further attempt", () =>
    Effect.gen(function*() {
      const { attempt, times } = scripted([overloaded(1), "ok"])
      const fiber = yield* Effect.fork(Retry.make({ base: "1 second", jitter: "none" }).apply(attempt))
      yield* TestClock.adjust("500 millis")
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(yield* Clock.currentTimeMillis).toBe(500)
      yield* TestClock.adjust("1 hour")
      expect(times).toStrictEqual([0])
    }))

  it.effect("hot path: a first success runs the attempt once, never sleeps and draws no random number", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.5, minPerSecond: 0 })
      const { attempt, times } = scripted<never>(["ok"])
      const [result, next] = yield* Retry.make({ budget }).apply(attempt).pipe(
        Effect.zip(Random.next),
        Effect.withRandom(Random.make(3))
      )
      expect(result).toBe(1)
      expect(times).toStrictEqual([0])
      expect(yield* Clock.currentTimeMillis).toBe(0)
      expect(next).toBe((yield* draws(3, 1))[0])
      // the first attempt was recorded: 0.5 of an extra attempt, and a second call makes it 1
      expect(yield* budget.available).toBe(0)
      yield* Retry.make({ budget }).apply(attempt)
      expect(yield* budget.available).toBe(1)
    }))

  it.effect("onRetry and onGiveUp report attempt, delay, error and reason", () =>
    Effect.gen(function*() {
      const errors = [overloaded(1), overloaded(2), overloaded(3)]
      const { attempt } = scripted(errors)
      const retries: Array<Retry.RetryEvent<AiModel.Overloaded>> = []
      const giveUps: Array<Retry.GiveUpEvent<AiModel.Overloaded>> = []
      const policy = Retry.make<AiModel.Overloaded>({
        base: "100 millis",
        maxAttempts: 3,
        jitter: "none",
        onRetry: (event) => Effect.sync(() => retries.push(event)),
        onGiveUp: (event) => Effect.sync(() => giveUps.push(event))
      })
      yield* settle(policy.apply(attempt))
      expect(retries).toStrictEqual([
        { attempt: 2, delay: Duration.millis(100), error: errors[0] },
        { attempt: 3, delay: Duration.millis(200), error: errors[1] }
      ])
      expect(giveUps).toStrictEqual([{ reason: "max-attempts", attempts: 3, error: errors[2] }])

      const invalid = new AiModel.InvalidRequest({ model: "m", reason: "bad" })
      const rejections: Array<Retry.GiveUpEvent<AiModel.InvalidRequest>> = []
      const rejected = Retry.make<AiModel.InvalidRequest>({
        onGiveUp: (event) => Effect.sync(() => rejections.push(event))
      })
      yield* Effect.exit(rejected.apply(Effect.fail(invalid)))
      expect(rejections).toStrictEqual([{ reason: "not-retryable", attempts: 1, error: invalid }])
    }))

  it("make and schedule reject a maxAttempts below 1 or a factor below 1", () => {
    expect(() => Retry.make({ maxAttempts: 0 })).toThrow(RangeError)
    expect(() => Retry.schedule({ maxAttempts: 1.5 })).toThrow(RangeError)
    expect(() => Retry.make({ factor: 0.5 })).toThrow(RangeError)
  })

  it.effect.prop(
    "issue 17.1: a retry waiting out an open circuit's retryAfter from fractional times retries once, into the half-open circuit",
    { trippedAt: fractional(0, 1e7), open: fractional(1e-3, 1e5), into: fractional(0, 1) },
    ({ into, open, trippedAt }) =>
      Effect.gen(function*() {
        const openDuration = Duration.millis(open)
        const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration })
        yield* TestClock.setTime(trippedAt)
        yield* Effect.exit(breaker.execute(Effect.fail(overloaded(1))))
        const openUntil = trippedAt + Duration.toMillis(openDuration)
        yield* TestClock.setTime(trippedAt + into * Duration.toMillis(openDuration))
        let attempts = 0
        // `open` reaches 100 s, past the default retryAfterMax (60 s), above which Retry gives up at once
        const policy = Retry.make({ base: Duration.zero, jitter: "none", maxAttempts: 3, retryAfterMax: Duration.days(1) })
        const call = policy.apply(breaker.execute(Effect.zipRight(Effect.sync(() => attempts++), Clock.currentTimeMillis)))
        const fiber = yield* Effect.fork(call)
        yield* TestClock.adjust(Duration.millis(open + 1))
        expect(yield* Fiber.join(fiber)).toBeGreaterThanOrEqual(openUntil)
        expect(attempts).toBe(1)
      }).pipe(noSpin(1000)),
    { fastCheck: { numRuns: 25 } }
  )
})
