import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, FastCheck as fc, Fiber, Option, Schema, TestClock } from "effect"
import * as Budget from "../../src/policy/Budget.js"
import * as Hedge from "../../src/policy/Hedge.js"

class Boom extends Schema.TaggedError<Boom>()("Boom", { copy: Schema.Number }) {}

interface Step {
  /** How long the copy takes, in ms. */
  readonly takes: number
  readonly fails?: boolean
  /** How long its interruption takes to finish (a finalizer), in ms. */
  readonly cleanup?: number
}

/**
 * An attempt whose n-th copy plays `steps[n]` (the last repeats): it records when it started,
 * sleeps, then succeeds with `copy n` or fails with `Boom`. Interruptions are recorded.
 */
const scripted = (steps: ReadonlyArray<Step>) => {
  const log = { started: [] as Array<number>, interrupted: [] as Array<number> }
  const attempt: Effect.Effect<string, Boom> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const copy = log.started.length
    log.started.push(now)
    const step = steps[Math.min(copy, steps.length - 1)]!
    return Effect.sleep(step.takes).pipe(
      Effect.zipRight(step.fails === true ? Effect.fail(new Boom({ copy })) : Effect.succeed(`copy ${copy}`)),
      Effect.onInterrupt(() =>
        Effect.zipRight(
          Effect.sleep(step.cleanup ?? 0),
          Effect.sync(() => log.interrupted.push(copy))
        )
      )
    )
  })
  return { attempt, log }
}

/** Hedge events as `hedge@ms`. */
const recorder = () => {
  const events: Array<string> = []
  const onHedge = (event: Hedge.HedgeEvent) =>
    Effect.sync(() => events.push(`${event.hedge}@${Duration.toMillis(event.after)}`))
  return { events, onHedge }
}

/** Runs `self` in a fiber, moves the TestClock `millis` ahead, and returns its exit and end time. */
const after = <A, E>(self: Effect.Effect<A, E>, millis: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.zip(Effect.exit(self), Clock.currentTimeMillis))
    yield* TestClock.adjust(millis)
    return yield* Fiber.join(fiber)
  })

describe("Hedge", () => {
  it.effect("the first success wins: the slow first copy is interrupted, and awaited, and the hedge's answer returned", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 500, cleanup: 10 }, { takes: 50 }])
      const { events, onHedge } = recorder()
      const hedge = yield* Hedge.make({ delay: "100 millis", onHedge })
      const fiber = yield* Effect.fork(Effect.zip(hedge.run(attempt), Clock.currentTimeMillis))

      yield* TestClock.adjust(150)
      // The hedge answered at 150, but the call waits for the loser's 10 ms cleanup.
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      expect(log.interrupted).toStrictEqual([])
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(fiber)).toStrictEqual(["copy 1", 160])
      expect(log).toStrictEqual({ started: [0, 100], interrupted: [0] })
      expect(events).toStrictEqual(["1@100"])
    }))

  it.effect("no hedge when the first copy answers before the delay, and none later either", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 99 }])
      const { events, onHedge } = recorder()
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 3, onHedge })
      expect(yield* after(hedge.run(attempt), 99)).toStrictEqual([Exit.succeed("copy 0"), 99])
      yield* TestClock.adjust(1000)
      expect(log).toStrictEqual({ started: [0], interrupted: [] })
      expect(events).toStrictEqual([])
    }))

  it.effect("exactly maxHedges hedges, one per delay, at the exact times", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 1000 }])
      const { events, onHedge } = recorder()
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 3, onHedge })
      expect(yield* after(hedge.run(attempt), 5000)).toStrictEqual([Exit.succeed("copy 0"), 1000])
      expect(log.started).toStrictEqual([0, 100, 200, 300])
      expect(log.interrupted.slice().sort()).toStrictEqual([1, 2, 3])
      expect(events).toStrictEqual(["1@100", "2@200", "3@300"])
    }))

  it.effect("maxHedges 0 never hedges", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 1000 }])
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 0 })
      expect(yield* after(hedge.run(attempt), 5000)).toStrictEqual([Exit.succeed("copy 0"), 1000])
      expect(log.started).toStrictEqual([0])
    }))

  it.effect("pitfall 'retry storm': with the budget empty no hedge starts", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 500 }])
      const budget = yield* Budget.make({ ratio: 0, minPerSecond: 0 })
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 2, budget })
      expect(yield* after(hedge.run(attempt), 5000)).toStrictEqual([Exit.succeed("copy 0"), 500])
      expect(log.started).toStrictEqual([0])
    }))

  it.effect("pitfall 'retry storm': over many calls the hedges stay within the budget's allowance", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 500 }])
      const { events, onHedge } = recorder()
      // 50 calls earn 0.1 × 50 = 5 hedges; no floor.
      const budget = yield* Budget.make({ ratio: 0.1, minPerSecond: 0, window: "10 seconds" })
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 2, budget, onHedge })
      const calls = Effect.all(Array.from({ length: 50 }, () => hedge.run(attempt)), { concurrency: "unbounded" })
      const [exit] = yield* after(calls, 5000)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(events).toStrictEqual(["1@100", "1@100", "1@100", "1@100", "1@100"])
      expect(log.started.length).toBe(55)
      expect(yield* budget.available).toBe(0)
    }))

  it.effect("a failing copy does not end the race while another runs: the other's success wins", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 300 }, { takes: 50, fails: true }])
      const hedge = yield* Hedge.make({ delay: "100 millis" })
      expect(yield* after(hedge.run(attempt), 5000)).toStrictEqual([Exit.succeed("copy 0"), 300])
      expect(log).toStrictEqual({ started: [0, 100], interrupted: [] })
    }))

  it.effect("every started copy failing gives the first error (in time), once the last one has failed", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 300, fails: true }, { takes: 50, fails: true }])
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 1 })
      expect(yield* after(hedge.run(attempt), 5000)).toStrictEqual([Exit.fail(new Boom({ copy: 1 })), 300])
      expect(log.started).toStrictEqual([0, 100])
    }))

  it.effect("pitfall 'retrying a 400': a failure never starts a copy; failing before the delay fails at once", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 20, fails: true }])
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 3 })
      expect(yield* after(hedge.run(attempt), 5000)).toStrictEqual([Exit.fail(new Boom({ copy: 0 })), 20])
      expect(log.started).toStrictEqual([0])
    }))

  it.effect("interrupting the caller interrupts every copy and stops the hedge timer", () =>
    Effect.gen(function*() {
      const { attempt, log } = scripted([{ takes: 10_000 }])
      const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges: 3 })
      const fiber = yield* Effect.fork(hedge.run(attempt))
      yield* TestClock.adjust(250)
      expect(log.started).toStrictEqual([0, 100, 200])
      yield* Fiber.interrupt(fiber)
      expect(log.interrupted.slice().sort()).toStrictEqual([0, 1, 2])
      yield* TestClock.adjust(1000)
      expect(log.started).toStrictEqual([0, 100, 200])
    }))

  it.effect("the learned delay is the percentile of recent latencies, `initial` until the ring is full", () =>
    Effect.gen(function*() {
      const { events, onHedge } = recorder()
      const hedge = yield* Hedge.make({ delay: { percentile: 0.9, initial: "1 second", samples: 10 }, onHedge })
      for (let i = 1; i <= 10; i++) {
        expect(Duration.toMillis(yield* hedge.delay)).toBe(1000)
        const { attempt } = scripted([{ takes: i * 10 }])
        yield* after(hedge.run(attempt), i * 10)
      }
      // Latencies 10, 20, …, 100: the 90th percentile (nearest rank 9 of 10) is 90.
      expect(Duration.toMillis(yield* hedge.delay)).toBe(90)

      // The next call hedges after 90 ms; it answers in 1000, which joins the ring.
      const slow = scripted([{ takes: 1000 }])
      const t0 = yield* Clock.currentTimeMillis
      yield* after(hedge.run(slow.attempt), 1000)
      expect(slow.log.started.map((t) => t - t0)).toStrictEqual([0, 90])
      expect(events).toStrictEqual(["1@90"])
      // 20, 30, …, 100, 1000: rank 9 is now 100.
      expect(Duration.toMillis(yield* hedge.delay)).toBe(100)

      // The ring forgets: ten fast calls later the delay follows them.
      for (let i = 0; i < 10; i++) {
        const { attempt } = scripted([{ takes: 5 }])
        yield* after(hedge.run(attempt), 5)
      }
      expect(Duration.toMillis(yield* hedge.delay)).toBe(5)
    }))

  it.effect("the learned delay is clamped to [min, max]", () =>
    Effect.gen(function*() {
      const low = yield* Hedge.make({ delay: { percentile: 0.5, initial: "1 second", min: "50 millis", samples: 3 } })
      const high = yield* Hedge.make({ delay: { percentile: 0.5, initial: "1 second", max: "15 millis", samples: 3 } })
      for (const takes of [10, 20, 30]) {
        yield* after(low.run(scripted([{ takes }]).attempt), takes)
        yield* after(high.run(scripted([{ takes }]).attempt), takes)
      }
      expect(Duration.toMillis(yield* low.delay)).toBe(50)
      expect(Duration.toMillis(yield* high.delay)).toBe(15)
    }))

  it.effect("a hedge's win records the call's latency, not the hedge's own shorter one (no downward spiral)", () =>
    Effect.gen(function*() {
      const hedge = yield* Hedge.make({ delay: { percentile: 1, initial: "100 millis", samples: 1 } })
      const { attempt, log } = scripted([{ takes: 1000 }, { takes: 10 }])
      expect(yield* after(hedge.run(attempt), 110)).toStrictEqual([Exit.succeed("copy 1"), 110])
      expect(log.started).toStrictEqual([0, 100])
      expect(Duration.toMillis(yield* hedge.delay)).toBe(110)
    }))

  it.effect.prop(
    "invariant: the earliest finishing started copy wins, copies start every delay up to maxHedges, the rest are interrupted",
    {
      // Copy i's time ends in the digit i + 1, so no two copies, and no copy and a timer, tie.
      tens: fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 4, maxLength: 4 }),
      maxHedges: fc.integer({ min: 0, max: 3 })
    },
    ({ maxHedges, tens }) =>
      Effect.gen(function*() {
        const takes = tens.map((t, i) => t * 10 + i + 1)
        const { attempt, log } = scripted(takes.map((t) => ({ takes: t })))
        const hedge = yield* Hedge.make({ delay: "100 millis", maxHedges })
        const [exit, end] = yield* after(hedge.run(attempt), 10_000)
        // Copy i starts at 100·i if nothing answered before; the first to finish wins.
        let winner = 0
        let count = 1
        for (let i = 1; i <= maxHedges && i * 100 < takes[winner]! + winner * 100; i++) {
          count++
          if (i * 100 + takes[i]! < winner * 100 + takes[winner]!) winner = i
        }
        expect(exit).toStrictEqual(Exit.succeed(`copy ${winner}`))
        expect(end).toBe(winner * 100 + takes[winner]!)
        expect(log.started).toStrictEqual(Array.from({ length: count }, (_, i) => i * 100))
        expect(log.interrupted.slice().sort()).toStrictEqual(
          Array.from({ length: count }, (_, i) => i).filter((i) => i !== winner)
        )
      })
  )
})
