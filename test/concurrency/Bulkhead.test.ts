import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Deferred, Effect, Exit, FastCheck as fc, Fiber, FiberId, Option, TestClock } from "effect"
import * as Bulkhead from "../../src/concurrency/Bulkhead.js"
import { interruptedWaiterScenario } from "./interruptedWaiter.js"

/** Lets every forked fiber run until it is suspended (queued on the bulkhead, or sleeping). */
const settle = TestClock.adjust(0)

interface Task {
  readonly permits: number
  readonly latency: number
  readonly fails: boolean
}

/**
 * Start times under a strict FIFO limiter when every task arrives at t = 0 in list order: the
 * head waits until its request fits, and nobody overtakes it.
 */
const fifoStarts = (permits: number, tasks: ReadonlyArray<Task>): Array<number> => {
  let free = permits
  let now = 0
  const running: Array<{ end: number; permits: number }> = []
  return tasks.map((task) => {
    while (free < task.permits) {
      now = Math.min(...running.map((r) => r.end))
      for (let i = running.length - 1; i >= 0; i--) {
        if (running[i]!.end === now) free += running.splice(i, 1)[0]!.permits
      }
    }
    free -= task.permits
    running.push({ end: now + task.latency, permits: task.permits })
    return now
  })
}

const taskArbitrary = (maxPermits: number) =>
  fc.record({
    permits: fc.integer({ min: 1, max: maxPermits }),
    latency: fc.integer({ min: 1, max: 1000 }),
    fails: fc.boolean()
  })

const scenario = fc.integer({ min: 1, max: 5 }).chain((permits) =>
  fc.record({
    permits: fc.constant(permits),
    tasks: fc.array(taskArbitrary(permits), { minLength: 1, maxLength: 30 })
  })
)

describe("Bulkhead", () => {
  it.effect.prop(
    "never more than `permits` in flight, every task completes, starts are exactly strict FIFO's",
    { scenario },
    ({ scenario: { permits, tasks } }) =>
      Effect.gen(function* () {
        const bulkhead = yield* Bulkhead.make({ permits })
        let inFlight = 0
        let maxInFlight = 0
        const starts: Array<number> = []
        const run = (task: Task, i: number) =>
          bulkhead.withPermits(task.permits)(
            Effect.gen(function* () {
              starts[i] = yield* Clock.currentTimeMillis
              inFlight += task.permits
              maxInFlight = Math.max(maxInFlight, inFlight)
              yield* Effect.sleep(task.latency)
              inFlight -= task.permits
              return task.fails ? yield* Effect.fail(i) : i
            })
          )
        const fiber = yield* Effect.fork(
          Effect.forEach(tasks, (task, i) => Effect.exit(run(task, i)), { concurrency: "unbounded" })
        )
        yield* TestClock.adjust(tasks.reduce((sum, task) => sum + task.latency, 0))
        const exits = yield* Fiber.join(fiber)

        expect(exits).toEqual(tasks.map((task, i) => task.fails ? Exit.fail(i) : Exit.succeed(i)))
        expect(starts).toEqual(fifoStarts(permits, tasks))
        expect(maxInFlight).toBeLessThanOrEqual(permits)
        expect(inFlight).toBe(0)
        expect(yield* bulkhead.available).toBe(permits)
        expect(yield* bulkhead.waiting).toBe(0)
      }),
    { fastCheck: { numRuns: 40 } }
  )

  it.effect.prop(
    "admits in arrival order, whatever the sizes (no barging by smaller requests)",
    { scenario },
    ({ scenario: { permits, tasks } }) =>
      Effect.gen(function* () {
        const bulkhead = yield* Bulkhead.make({ permits })
        const admitted: Array<number> = []
        const fiber = yield* Effect.fork(
          Effect.forEach(
            tasks,
            (task, i) =>
              bulkhead.withPermits(task.permits)(
                Effect.zipRight(Effect.sync(() => admitted.push(i)), Effect.sleep(task.latency))
              ),
            { concurrency: "unbounded", discard: true }
          )
        )
        yield* TestClock.adjust(tasks.reduce((sum, task) => sum + task.latency, 0))
        yield* Fiber.join(fiber)
        expect(admitted).toEqual(tasks.map((_, i) => i))
      }),
    { fastCheck: { numRuns: 40 } }
  )

  it.effect("a 1-permit caller does not overtake a queued 2-permit caller (Semaphore lets it barge)", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 3 })
      const start = (name: string, n: number) =>
        Effect.fork(
          bulkhead.withPermits(n)(
            Effect.zipLeft(Effect.map(Clock.currentTimeMillis, (t) => `${name}@${t}`), Effect.sleep("1 second"))
          )
        )
      const a = yield* start("a", 2)
      yield* settle
      const b = yield* start("b", 2)
      yield* settle
      const c = yield* start("c", 1)
      yield* settle
      // one permit is free, but `c` waits behind `b`
      expect(yield* bulkhead.available).toBe(1)
      expect(yield* bulkhead.waiting).toBe(2)

      yield* TestClock.adjust("1 second")
      expect(yield* bulkhead.available).toBe(0)
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(Fiber.zip(a, Fiber.zip(b, c)))).toEqual(["a@0", ["b@1000", "c@1000"]])
      expect(yield* bulkhead.available).toBe(3)
    }))

  it.effect("interrupting the head waiter lets the next one take the permits already free", () =>
    Effect.gen(function* () {
      // 3 permits: A holds 2 for an hour, B (2) waits at the head, C (1) waits behind B with a
      // permit free. When B gives up, C must start now, not when A releases.
      const bulkhead = yield* Bulkhead.make({ permits: 3 })
      const holder = yield* Effect.fork(bulkhead.withPermits(2)(Effect.sleep("1 hour")))
      yield* settle
      const b = yield* Effect.fork(bulkhead.withPermits(2)(Effect.void))
      yield* settle
      const c = yield* Effect.fork(bulkhead.withPermit(Clock.currentTimeMillis))
      yield* settle
      expect(yield* bulkhead.waiting).toBe(2)
      expect(yield* bulkhead.available).toBe(1)
      yield* Fiber.interrupt(b)
      yield* settle
      expect(yield* Fiber.join(c)).toBe(0)
      expect(yield* bulkhead.waiting).toBe(0)
      expect(yield* bulkhead.available).toBe(1)
      yield* Fiber.interrupt(holder)
      expect(yield* bulkhead.available).toBe(3)
    }))

  it.effect("interrupting a waiter removes it from the queue and leaks no permit", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 1 })
      yield* interruptedWaiterScenario(bulkhead.withPermit, bulkhead.waiting)
      expect(yield* bulkhead.available).toBe(1)
    }))

  it.effect("interrupting a holder releases its permits to the next waiter at once", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 3 })
      const holder = yield* Effect.fork(bulkhead.withPermits(2)(Effect.never))
      yield* settle
      const waiter = yield* Effect.fork(bulkhead.withPermits(3)(Clock.currentTimeMillis))
      yield* settle
      expect(yield* bulkhead.available).toBe(1)

      yield* TestClock.adjust("5 seconds")
      expect(Exit.isInterrupted(yield* Fiber.interrupt(holder))).toBe(true)
      expect(yield* Fiber.join(waiter)).toBe(5000)
      expect(yield* bulkhead.available).toBe(3)
    }))

  describe("a waiter interrupted at the same moment it is granted leaks nothing", () => {
    const race = (order: "interrupt, then release" | "release, then interrupt") =>
      Effect.gen(function* () {
        const bulkhead = yield* Bulkhead.make({ permits: 1 })
        const waiterFiber = yield* Deferred.make<Fiber.RuntimeFiber<number>>()
        const interruptWaiter = Effect.flatMap(Deferred.await(waiterFiber), (f) => Fiber.interruptAsFork(f, FiberId.none))
        // The holder sends the interrupt and returns its permit in one synchronous step, so the
        // waiter is granted while its interruption is pending (or the reverse).
        const holder = yield* Effect.fork(
          order === "interrupt, then release"
            ? bulkhead.withPermit(interruptWaiter)
            : Effect.zipRight(bulkhead.withPermit(Deferred.await(waiterFiber)), interruptWaiter)
        )
        yield* settle
        const waiter = yield* Effect.fork(bulkhead.withPermit(Effect.as(Effect.sleep("1 second"), 1)))
        yield* settle
        const next = yield* Effect.fork(bulkhead.withPermit(Clock.currentTimeMillis))
        yield* settle
        expect(yield* bulkhead.waiting).toBe(2)

        yield* Deferred.succeed(waiterFiber, waiter)
        yield* Fiber.join(holder)
        expect(Exit.isInterrupted(yield* Fiber.await(waiter))).toBe(true)
        yield* settle
        expect(yield* Fiber.poll(next)).toEqual(Option.some(Exit.succeed(0)))
        expect(yield* bulkhead.available).toBe(1)
        expect(yield* bulkhead.waiting).toBe(0)
      })

    it.effect("interrupt, then release", () => race("interrupt, then release"))
    it.effect("release, then interrupt", () => race("release, then interrupt"))
  })

  it.effect("1,000 waiters on 3 permits all complete, in arrival order, and all permits come back", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 3 })
      const gate = yield* Deferred.make<void>()
      let inFlight = 0
      let maxInFlight = 0
      const admitted: Array<number> = []
      const fiber = yield* Effect.fork(Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => i),
        (i) =>
          bulkhead.withPermit(
            Effect.gen(function* () {
              admitted.push(i)
              inFlight++
              maxInFlight = Math.max(maxInFlight, inFlight)
              yield* Deferred.await(gate)
              yield* Effect.yieldNow()
              inFlight--
              return i
            })
          ),
        { concurrency: "unbounded" }
      ))
      yield* settle
      expect(yield* bulkhead.waiting).toBe(997)
      expect(yield* bulkhead.available).toBe(0)

      yield* Deferred.succeed(gate, undefined)
      const results = yield* Fiber.join(fiber)
      expect(results).toEqual(Array.from({ length: 1000 }, (_, i) => i))
      expect(admitted).toEqual(results)
      expect(maxInFlight).toBe(3)
      expect(yield* bulkhead.available).toBe(3)
      expect(yield* bulkhead.waiting).toBe(0)
    }))

  it.effect("a request for more permits than exist is a defect, not a wait that never ends", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 3 })
      for (const n of [4, 0, 1.5]) {
        const exit = yield* Effect.exit(bulkhead.withPermits(n)(Effect.succeed(1)))
        expect(exit).toEqual(Exit.die(new RangeError(`Bulkhead: cannot take ${n} permits of 3`)))
      }
      expect(yield* bulkhead.available).toBe(3)
      const invalid = yield* Effect.exit(Bulkhead.make({ permits: 0 }))
      expect(Exit.isFailure(invalid) && Cause.isDie(invalid.cause)).toBe(true)
    }))

  describe("maxQueued", () => {
    interface Arrival {
      readonly permits: number
      /**
       * Time since the previous arrival. Arrivals fall on 5 ms marks (mod 10) and latencies are a
       * quarter millisecond past a 10 ms mark, so no end coincides with an arrival.
       */
      readonly gap: number
      readonly latency: number
      /** Held through `takePermits` in a scope instead of `withPermits`: the same queue and bound. */
      readonly scoped: boolean
    }

    /** What a strict FIFO bulkhead with a bounded queue does: each task's start time, or "full". */
    const expected = (permits: number, maxQueued: number, arrivals: ReadonlyArray<Arrival>): Array<number | "full"> => {
      let free = permits
      const queue: Array<number> = []
      const running: Array<{ end: number; permits: number }> = []
      const result: Array<number | "full"> = []
      const start = (i: number, at: number) => {
        free -= arrivals[i]!.permits
        running.push({ end: at + arrivals[i]!.latency, permits: arrivals[i]!.permits })
        result[i] = at
      }
      // completions strictly before `until`, in time order, each letting the queue move
      const advance = (until: number) => {
        for (;;) {
          const next = running.reduce<{ end: number; permits: number } | undefined>(
            (min, r) => (min === undefined || r.end < min.end ? r : min),
            undefined
          )
          if (next === undefined || next.end >= until) return
          running.splice(running.indexOf(next), 1)
          free += next.permits
          while (queue.length > 0 && arrivals[queue[0]!]!.permits <= free) start(queue.shift()!, next.end)
        }
      }
      let now = 5
      arrivals.forEach((arrival, i) => {
        now += arrival.gap
        advance(now)
        if (queue.length === 0 && free >= arrival.permits) start(i, now)
        else if (queue.length >= maxQueued) result[i] = "full"
        else queue.push(i)
      })
      advance(Infinity)
      return result
    }

    const scenario = fc.integer({ min: 1, max: 4 }).chain((permits) =>
      fc.record({
        permits: fc.constant(permits),
        maxQueued: fc.integer({ min: 0, max: 4 }),
        arrivals: fc.array(
          fc.record({
            permits: fc.integer({ min: 1, max: permits }),
            gap: fc.integer({ min: 0, max: 5 }).map((n) => n * 10),
            latency: fc.integer({ min: 1, max: 10 }).map((n) => n * 10 + 0.25),
            scoped: fc.boolean()
          }),
          { minLength: 1, maxLength: 20 }
        )
      })
    )

    it.effect.prop(
      "BulkheadFull exactly when the queue is full: never a caller too early, never one too many waiting (withPermits and takePermits alike)",
      { scenario },
      ({ scenario: { arrivals, maxQueued, permits } }) =>
        Effect.gen(function* () {
          const bulkhead = yield* Bulkhead.make({ permits, maxQueued })
          let maxWaiting = 0
          const fibers: Array<Fiber.RuntimeFiber<number, Bulkhead.BulkheadFull>> = []
          yield* TestClock.adjust(5)
          for (const arrival of arrivals) {
            yield* TestClock.adjust(arrival.gap)
            const task = Effect.zipLeft(Clock.currentTimeMillis, Effect.sleep(arrival.latency))
            fibers.push(yield* Effect.fork(
              arrival.scoped
                ? Effect.scoped(Effect.zipRight(bulkhead.takePermits(arrival.permits), task))
                : bulkhead.withPermits(arrival.permits)(task)
            ))
            yield* settle
            const stats = yield* bulkhead.stats
            maxWaiting = Math.max(maxWaiting, stats.queued)
            expect(stats.queued).toBe(yield* bulkhead.waiting)
            expect(stats.available).toBe(yield* bulkhead.available)
          }
          yield* TestClock.adjust(arrivals.reduce((sum, a) => sum + a.latency, 0))
          const exits = yield* Effect.forEach(fibers, Fiber.await)
          expect(exits.map((exit) =>
            Exit.isSuccess(exit) ? exit.value : Exit.isFailure(exit) && Cause.isFailType(exit.cause) ? "full" : "other"
          )).toEqual(expected(permits, maxQueued, arrivals))
          for (const exit of exits) {
            if (Exit.isFailure(exit)) expect(exit).toEqual(Exit.fail(new Bulkhead.BulkheadFull({ permits, maxQueued })))
          }
          expect(maxWaiting).toBeLessThanOrEqual(maxQueued)
          expect(yield* bulkhead.stats).toEqual({ permits, available: permits, active: 0, queued: 0, maxQueued })
        }),
      { fastCheck: { numRuns: 40 } }
    )

    it.effect("stats: permits in use, callers running and waiting, live; an interrupted waiter frees its place in the queue", () =>
      Effect.gen(function* () {
        const bulkhead = yield* Bulkhead.make({ permits: 3, maxQueued: 2 })
        const a = yield* Effect.fork(bulkhead.withPermits(2)(Effect.sleep("1 second")))
        const b = yield* Effect.fork(bulkhead.withPermit(Effect.sleep("1 second")))
        yield* settle
        expect(yield* bulkhead.stats).toEqual({ permits: 3, available: 0, active: 2, queued: 0, maxQueued: 2 })
        const c = yield* Effect.fork(bulkhead.withPermits(3)(Effect.sleep("1 second")))
        const d = yield* Effect.fork(bulkhead.withPermit(Effect.sleep("1 second")))
        yield* settle
        expect(yield* bulkhead.stats).toEqual({ permits: 3, available: 0, active: 2, queued: 2, maxQueued: 2 })
        const full = yield* Effect.flip(bulkhead.withPermit(Effect.void))
        expect(full).toEqual(new Bulkhead.BulkheadFull({ permits: 3, maxQueued: 2 }))
        expect(full.message).toBe("bulkhead full: all 3 permits taken and 2 callers already waiting")
        yield* Fiber.interrupt(d)
        expect((yield* bulkhead.stats).queued).toBe(1)
        const e = yield* Effect.fork(bulkhead.withPermit(Clock.currentTimeMillis))
        yield* settle
        expect((yield* bulkhead.stats).queued).toBe(2)
        yield* TestClock.adjust("1 second")
        // a and b are done; c (3 permits) runs, e waits behind it
        expect(yield* bulkhead.stats).toEqual({ permits: 3, available: 0, active: 1, queued: 1, maxQueued: 2 })
        yield* TestClock.adjust("1 second")
        expect(yield* Fiber.join(e)).toBe(2000)
        yield* Fiber.join(Fiber.zip(a, Fiber.zip(b, c)))
        expect(yield* bulkhead.stats).toEqual({ permits: 3, available: 3, active: 0, queued: 0, maxQueued: 2 })
      }))

    it.effect("maxQueued 0: nobody waits; a free permit is still taken at once", () =>
      Effect.gen(function* () {
        const bulkhead = yield* Bulkhead.make({ permits: 1, maxQueued: 0 })
        const holder = yield* Effect.fork(bulkhead.withPermit(Effect.sleep("1 second")))
        yield* settle
        expect(yield* Effect.flip(bulkhead.withPermit(Effect.void))).toEqual(new Bulkhead.BulkheadFull({ permits: 1, maxQueued: 0 }))
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(holder)
        expect(yield* bulkhead.withPermit(Effect.succeed("ran"))).toBe("ran")
      }))

    it.effect("an unbounded bulkhead never fails with BulkheadFull (its type has no such error); a bad bound is a defect", () =>
      Effect.gen(function* () {
        const bulkhead: Bulkhead.Bulkhead = yield* Bulkhead.make({ permits: 1 })
        expect((yield* bulkhead.stats).maxQueued).toBe(Infinity)
        for (const maxQueued of [-1, 1.5, Number.NaN]) {
          const exit = yield* Effect.exit(Bulkhead.make({ permits: 1, maxQueued }))
          expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
        }
      }))
  })

  it.effect("takePermits holds the permits until its scope closes, in the same FIFO queue as withPermits", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 2 })
      const order: Array<string> = []
      const held = (name: string, n: number, millis: number) =>
        Effect.fork(Effect.scoped(Effect.gen(function* () {
          yield* bulkhead.takePermits(n)
          order.push(`${name}@${yield* Clock.currentTimeMillis}`)
          yield* Effect.sleep(millis)
        })))
      const a = yield* held("a", 2, 100)
      yield* settle
      const b = yield* Effect.fork(bulkhead.withPermit(Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => order.push(`b@${t}`)))))
      yield* settle
      const c = yield* held("c", 1, 10)
      yield* settle
      expect(yield* bulkhead.waiting).toBe(2)
      yield* TestClock.adjust(110)
      yield* Fiber.join(Fiber.zip(a, Fiber.zip(b, c)))
      expect(order).toEqual(["a@0", "b@100", "c@100"])
      expect(yield* bulkhead.available).toBe(2)
    }))

  it.effect("takePermits under a timeout: the waiter gives up at the deadline and leaves nothing behind", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 1 })
      const holder = yield* Effect.fork(bulkhead.withPermit(Effect.sleep(1000)))
      yield* settle
      const waiter = yield* Effect.fork(Effect.scoped(
        Effect.timeoutFail(bulkhead.takePermits(1), { duration: 300, onTimeout: () => "timed out" })
      ))
      yield* TestClock.adjust(299)
      expect(yield* bulkhead.waiting).toBe(1)
      yield* TestClock.adjust(1)
      expect(yield* Effect.flip(Fiber.join(waiter))).toBe("timed out")
      expect(yield* bulkhead.waiting).toBe(0)
      yield* TestClock.adjust(700)
      yield* Fiber.join(holder)
      expect(yield* bulkhead.available).toBe(1)
      const exit = yield* Effect.exit(Effect.scoped(bulkhead.takePermits(2)))
      expect(exit).toEqual(Exit.die(new RangeError("Bulkhead: cannot take 2 permits of 1")))
    }))

  it.effect("takePermits on a bounded bulkhead: counted in stats, BulkheadFull when the queue is full, an interrupted waiter leaves its place", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 1, maxQueued: 3 })
      const scoped = <A, E, R>(self: Effect.Effect<A, E, R>) =>
        Effect.scoped(Effect.zipRight(bulkhead.takePermits(1), self))
      const holder = yield* Effect.fork(scoped(Effect.sleep("1 second")))
      const waiter = yield* Effect.fork(scoped(Effect.void))
      yield* settle
      expect(yield* bulkhead.stats).toEqual({ permits: 1, available: 0, active: 1, queued: 1, maxQueued: 3 })
      const others = yield* Effect.fork(Effect.all([scoped(Effect.never), scoped(Effect.never)], { concurrency: "unbounded" }))
      yield* settle
      const full = yield* Effect.flip(Effect.scoped(bulkhead.takePermits(1)))
      expect(full).toEqual(new Bulkhead.BulkheadFull({ permits: 1, maxQueued: 3 }))
      yield* Fiber.interrupt(others)
      expect((yield* bulkhead.stats).queued).toBe(1)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(Fiber.zip(holder, waiter))
      expect(yield* bulkhead.stats).toEqual({ permits: 1, available: 1, active: 0, queued: 0, maxQueued: 3 })
      yield* interruptedWaiterScenario(scoped, bulkhead.waiting)
      expect(yield* bulkhead.stats).toEqual({ permits: 1, available: 1, active: 0, queued: 0, maxQueued: 3 })
    }))
})
