import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, TestClock } from "effect"
import * as Budget from "../../src/policy/Budget.js"

const repeat = <A>(n: number, self: Effect.Effect<A>) => Effect.forEach(Array.from({ length: n }), () => self)

describe("Budget", () => {
  it.effect("ratio: 30 first attempts earn exactly 3 extra attempts, then withdrawals fail", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 0 })
      expect(yield* budget.available).toBe(0)
      expect(yield* budget.tryWithdraw).toBe(false)
      yield* repeat(30, budget.recordRequest)
      expect(yield* budget.available).toBe(3)
      expect(yield* repeat(4, budget.tryWithdraw)).toStrictEqual([true, true, true, false])
      expect(yield* budget.available).toBe(0)
    }))

  it.effect("ratio: 10 × 0.1 is a whole extra attempt (sums of fractions are not lost to rounding)", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 0 })
      yield* repeat(10, budget.recordRequest)
      expect(yield* budget.available).toBe(1)
      expect(yield* budget.tryWithdraw).toBe(true)
      expect(yield* budget.tryWithdraw).toBe(false)
    }))

  it.effect("floor: with no traffic, minPerSecond × window extra attempts are allowed", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 1, window: "10 seconds" })
      expect(yield* budget.available).toBe(10)
      const taken = yield* repeat(11, budget.tryWithdraw)
      expect(taken.filter(Boolean)).toHaveLength(10)
      expect(taken[10]).toBe(false)
    }))

  it.effect("available counts whole attempts only: 15 × 0.1 + 0.5 floor = 2", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 0.05, window: "10 seconds" })
      yield* repeat(15, budget.recordRequest)
      expect(yield* budget.available).toBe(2)
      yield* budget.tryWithdraw
      expect(yield* budget.available).toBe(1)
    }))

  it.effect("defaults (Linkerd, Finagle): ratio 0.2, 10 per second over 10 seconds", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make()
      yield* repeat(20, budget.recordRequest)
      expect(yield* budget.available).toBe(104)
    }))

  it.effect("pitfall: never forgets old failures: the window slides and old traffic is forgotten", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0.5, minPerSecond: 0, window: "10 seconds" })
      yield* repeat(10, budget.recordRequest) // t = 0: earns 5
      yield* TestClock.adjust("5 seconds")
      yield* repeat(4, budget.recordRequest) // t = 5 s: earns 2
      expect(yield* budget.available).toBe(7)
      yield* TestClock.adjust("4999 millis") // t = 9.999 s: everything still counts
      expect(yield* budget.available).toBe(7)
      yield* TestClock.adjust("1 millis") // t = 10 s: the first ten are forgotten
      expect(yield* budget.available).toBe(2)
      yield* TestClock.adjust("5 seconds") // t = 15 s: all forgotten
      expect(yield* budget.available).toBe(0)
    }))

  it.effect("sliding window: withdrawals are forgotten too, so the budget refills", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 0, minPerSecond: 0.3, window: "10 seconds" })
      expect(yield* repeat(4, budget.tryWithdraw)).toStrictEqual([true, true, true, false])
      yield* TestClock.adjust("9 seconds")
      expect(yield* budget.tryWithdraw).toBe(false)
      yield* TestClock.adjust("1 second")
      expect(yield* budget.available).toBe(3)
    }))

  it.effect("a slot reused after a full turn of the window starts empty", () =>
    Effect.gen(function*() {
      const budget = yield* Budget.make({ ratio: 1, minPerSecond: 0, window: "1 second" })
      yield* repeat(3, budget.recordRequest) // step 0
      yield* TestClock.adjust("1 second") // step 10 uses the same slot as step 0
      yield* budget.recordRequest
      expect(yield* budget.available).toBe(1)
    }))

  it.effect("make rejects a negative ratio or an empty window with a RangeError defect", () =>
    Effect.gen(function*() {
      const defect = (options: Budget.Options) =>
        Effect.map(Effect.exit(Budget.make(options)), (exit) => Exit.isFailure(exit) ? Cause.squash(exit.cause) : exit.value)
      expect(yield* defect({ ratio: -1 })).toStrictEqual(
        new RangeError("Budget: ratio must be >= 0 and window > 0 (got -1, 10000 ms)")
      )
      expect(yield* defect({ window: 0 })).toStrictEqual(
        new RangeError("Budget: ratio must be >= 0 and window > 0 (got 0.2, 0 ms)")
      )
    }))
})
