import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Data, Effect, Exit, FastCheck as fc, Fiber, Option, TestClock } from "effect"
import * as Coalesce from "../../src/concurrency/Coalesce.js"

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

interface Arrival {
  readonly key: number
  readonly at: number
  readonly latency: number
}

/**
 * Which call each arrival shares under coalescing: a call for a key starts when a caller
 * arrives and no call for that key is in flight, and ends `latency` later (the leader's).
 */
const expectedCalls = (arrivals: ReadonlyArray<Arrival>): Array<number> => {
  const order = arrivals.map((_, i) => i).sort((a, b) => arrivals[a]!.at - arrivals[b]!.at || a - b)
  const running = new Map<number, { id: number; end: number }>()
  const callOf: Array<number> = []
  let calls = 0
  for (const i of order) {
    const { at, key, latency } = arrivals[i]!
    const current = running.get(key)
    if (current !== undefined && current.end > at) callOf[i] = current.id
    else {
      const id = calls++
      running.set(key, { id, end: at + latency })
      callOf[i] = id
    }
  }
  return callOf
}

// A call lasts what its key says (so it does not matter which of two simultaneous callers leads
// it), an odd number of ms, while callers arrive at even ms: no arrival ties with a call's end.
const arrivals = fc.tuple(
  fc.array(fc.integer({ min: 0, max: 15 }), { minLength: 4, maxLength: 4 }),
  fc.array(fc.record({ key: fc.integer({ min: 0, max: 3 }), at: fc.integer({ min: 0, max: 25 }) }), {
    minLength: 1,
    maxLength: 40
  })
).map(([latencies, calls]) => calls.map(({ at, key }) => ({ key, at: 2 * at, latency: 2 * latencies[key]! + 1 })))

describe("Coalesce", () => {
  it.effect.prop(
    "one call per key while in flight, over random interleavings; every waiter gets its call's outcome",
    { arrivals },
    ({ arrivals }) =>
      Effect.gen(function*() {
        const coalesce = yield* Coalesce.make<number, number, number>()
        let started = 0
        const callers = arrivals.map(({ at, key, latency }) =>
          Effect.zipRight(
            Effect.sleep(at),
            coalesce.share(
              key,
              Effect.suspend(() => {
                const id = started++
                return Effect.as(Effect.sleep(latency), id)
              })
            )
          )
        )
        const fiber = yield* Effect.fork(Effect.all(callers, { concurrency: "unbounded" }))
        yield* TestClock.adjust(200)
        const results = yield* Fiber.join(fiber)
        const expected = expectedCalls(arrivals)
        // Calls are numbered as they start (callers arriving at the same instant start in any
        // order), so compare the partition: two callers share a call exactly when they should.
        const got = results.map((r) => Exit.getOrElse(r.exit, () => -1))
        for (let i = 0; i < got.length; i++) {
          for (let j = 0; j < i; j++) expect(got[i] === got[j]).toBe(expected[i] === expected[j])
        }
        expect(started).toBe(new Set(expected).size)
        // Each call served exactly the callers that share its id, and exactly one of them led it.
        for (const [i, r] of results.entries()) {
          expect(r.callers).toBe(expected.filter((id) => id === expected[i]).length)
        }
        for (const id of new Set(expected)) {
          expect(results.filter((r, i) => expected[i] === id && r.role === "led").length).toBe(1)
        }
        expect(yield* coalesce.inFlight).toBe(0)
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect("1,000 identical requests in flight make exactly one underlying call", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      let calls = 0
      const call = Effect.suspend(() => {
        calls++
        return Effect.as(Effect.sleep("1 second"), "answer")
      })
      const fiber = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 1000 }), () => coalesce.share("same prompt", call), {
          concurrency: "unbounded"
        })
      )
      yield* settle
      expect(yield* coalesce.inFlight).toBe(1)
      yield* TestClock.adjust("1 second")
      const shared = yield* Fiber.join(fiber)
      expect(calls).toBe(1)
      expect(shared.every((s) => Exit.isSuccess(s.exit) && s.exit.value === "answer" && s.callers === 1000)).toBe(true)
      expect(shared.filter((s) => s.role === "led")).toHaveLength(1)
      expect(yield* coalesce.inFlight).toBe(0)
    }))

  it.effect("every waiter gets the same failure, and the failure is not remembered once the call ended", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string, string>()
      let calls = 0
      const call = Effect.suspend(() => {
        calls++
        return calls === 1 ? Effect.zipRight(Effect.sleep(10), Effect.fail("boom")) : Effect.succeed("ok")
      })
      const waiters = yield* Effect.fork(
        Effect.all([coalesce.apply("k", call), coalesce.apply("k", call)], { concurrency: "unbounded", mode: "either" })
      )
      yield* TestClock.adjust(10)
      const outcomes = yield* Fiber.join(waiters)
      expect(outcomes.map((o) => o._tag === "Left" && o.left)).toEqual(["boom", "boom"])
      // the seed's `Map` of promises does not keep it either, but a `Cache` would until its TTL
      expect(yield* coalesce.apply("k", call)).toBe("ok")
      expect(calls).toBe(2)
    }))

  it.effect.prop(
    "seed bug 11: the shared call is interrupted exactly when its last waiter leaves, never before",
    { order: fc.array(fc.nat(), { minLength: 1, maxLength: 12 }) },
    ({ order }) =>
      Effect.gen(function*() {
        const coalesce = yield* Coalesce.make<string>()
        let interrupted = false
        let stoppedAt = -1
        const call = Effect.sleep("1 hour").pipe(
          Effect.as("never"),
          Effect.onInterrupt(() =>
            // the call takes 5 ms to stop: the last waiter must wait for it
            Effect.zipRight(
              Effect.sleep(5),
              Effect.flatMap(Clock.currentTimeMillis, (t) =>
                Effect.sync(() => {
                  interrupted = true
                  stoppedAt = t
                }))
            )
          )
        )
        const waiters: Array<Fiber.RuntimeFiber<string>> = []
        for (let i = 0; i < order.length; i++) {
          waiters.push(yield* Effect.fork(coalesce.apply("k", call)))
          yield* settle
        }
        // leave in a random order (a permutation of the waiters, the leader anywhere in it)
        const leaving = waiters.map((w, i) => ({ w, rank: order[i]! })).sort((a, b) => a.rank - b.rank)
        for (const [n, { w }] of leaving.entries()) {
          const last = n === leaving.length - 1
          const interrupter = yield* Effect.fork(Fiber.interrupt(w))
          yield* settle
          if (!last) {
            // a waiter that is not the last one leaves at once, and the call goes on
            expect((yield* Fiber.poll(interrupter))._tag).toBe("Some")
            expect(interrupted).toBe(false)
          } else {
            // the last one interrupts the call and returns only once it has stopped
            expect((yield* Fiber.poll(interrupter))._tag).toBe("None")
            yield* TestClock.adjust(5)
            yield* Fiber.join(interrupter)
            expect(interrupted).toBe(true)
            expect(stoppedAt).toBe(5)
          }
        }
        expect(yield* coalesce.inFlight).toBe(0)
      }),
    { fastCheck: { numRuns: 25 } }
  )

  it.effect("the leader may leave early: it returns at once and the others still get the answer (Effect.request makes it wait)", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      let calls = 0
      const call = Effect.suspend(() => {
        calls++
        return Effect.as(Effect.sleep("10 seconds"), "answer")
      })
      const leader = yield* Effect.fork(coalesce.share("k", call))
      yield* settle
      const joiner = yield* Effect.fork(coalesce.share("k", call))
      yield* settle
      const leaving = yield* Effect.fork(Fiber.interrupt(leader))
      yield* settle
      expect((yield* Fiber.poll(leaving))._tag).toBe("Some")
      yield* TestClock.adjust("10 seconds")
      const shared = yield* Fiber.join(joiner)
      expect(shared).toEqual({ exit: Exit.succeed("answer"), role: "joined", callers: 1 })
      expect(calls).toBe(1)
    }))

  it.effect("a caller arriving while the abandoned call is still stopping starts a new call instead of joining it", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      let calls = 0
      const call = Effect.suspend(() => {
        const n = ++calls
        return Effect.as(Effect.sleep(100), `call ${n}`).pipe(Effect.onInterrupt(() => Effect.sleep(50)))
      })
      const first = yield* Effect.fork(coalesce.apply("k", call))
      yield* settle
      const leaving = yield* Effect.fork(Fiber.interrupt(first))
      yield* settle
      const second = yield* Effect.fork(coalesce.apply("k", call))
      yield* TestClock.adjust(200)
      yield* Fiber.join(leaving)
      expect(yield* Fiber.join(second)).toBe("call 2")
      expect(calls).toBe(2)
    }))

  it.effect("share: each caller learns whether it led or joined and how many callers the call served", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      const call = Effect.as(Effect.sleep(10), "answer")
      const a = yield* Effect.fork(coalesce.share("k", call))
      yield* settle
      const b = yield* Effect.fork(coalesce.share("k", call))
      const c = yield* Effect.fork(coalesce.share("k", call))
      yield* settle
      yield* Fiber.interrupt(c) // left early: not served
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(a)).toEqual({ exit: Exit.succeed("answer"), role: "led", callers: 2 })
      expect(yield* Fiber.join(b)).toEqual({ exit: Exit.succeed("answer"), role: "joined", callers: 2 })
      // alone: led, served one
      expect(yield* coalesce.share("k", Effect.succeed("x"))).toEqual({ exit: Exit.succeed("x"), role: "led", callers: 1 })
    }))

  it.effect("whileJoined wraps the wait of a caller that joined a call in flight, never the leader's (issue 17.4)", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      const wrapped: Array<string> = []
      const tagged = (who: string): Coalesce.WhileJoined => (wait) =>
        Effect.zipRight(Effect.sync(() => wrapped.push(who)), wait)
      const call = Effect.as(Effect.sleep(100), "answer")
      const fibers = yield* Effect.forEach(["a", "b", "c"], (who) => Effect.fork(coalesce.share("k", call, tagged(who))))
      yield* TestClock.adjust(100)
      const shared = yield* Effect.forEach(fibers, Fiber.join)
      expect(shared.map((s) => s.role)).toStrictEqual(["led", "joined", "joined"])
      expect(wrapped).toStrictEqual(["b", "c"])
    }))

  it.effect("share reports a defect in its exit instead of failing", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      const shared = yield* coalesce.share("k", Effect.die("bug"))
      expect(Exit.isFailure(shared.exit) && Option.getOrUndefined(Cause.dieOption(shared.exit.cause))).toBe("bug")
    }))

  it.effect("keys that implement Equal are coalesced by value; other keys are kept apart", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<number, never, unknown>()
      let calls = 0
      const call = Effect.suspend(() => Effect.as(Effect.sleep(10), ++calls))
      const fiber = yield* Effect.fork(
        Effect.all(
          [
            coalesce.apply(Data.struct({ prompt: "p", maxTokens: 8 }), call),
            coalesce.apply(Data.struct({ prompt: "p", maxTokens: 8 }), call),
            coalesce.apply(Data.struct({ prompt: "p", maxTokens: 9 }), call),
            coalesce.apply("p", call)
          ],
          { concurrency: "unbounded" }
        )
      )
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(fiber)).toEqual([1, 1, 2, 3])
    }))

  it.effect("an interrupted caller of an uncontended call interrupts it (it was the last waiter)", () =>
    Effect.gen(function*() {
      const coalesce = yield* Coalesce.make<string>()
      let interrupted = false
      const fiber = yield* Effect.fork(
        coalesce.apply("k", Effect.onInterrupt(Effect.never, () => Effect.sync(() => (interrupted = true))))
      )
      yield* settle
      yield* Fiber.interrupt(fiber)
      expect(interrupted).toBe(true)
      expect(yield* coalesce.inFlight).toBe(0)
    }))
})
