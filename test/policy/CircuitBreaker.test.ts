import { describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, Clock, Deferred, Duration, Effect, Exit, Fiber, Option, Schedule, Schema, Stream, TestClock } from "effect"
import * as FastCheck from "effect/FastCheck"
import { AuthenticationFailed, InvalidRequest, Overloaded, RateLimited } from "../../src/model/AiModel.js"
import * as CircuitBreaker from "../../src/policy/CircuitBreaker.js"
import { noSpin } from "../support/spinGuard.js"

const overloaded = new Overloaded({ model: "m" })
const invalid = new InvalidRequest({ model: "m", reason: "prompt too long" })

/** Let forked fibers run until `done` holds (they only need the scheduler, not the clock). */
const waitFor = (done: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !done(); i++) yield* Effect.yieldNow()
    expect(done()).toBe(true)
  })

const settle = Effect.repeatN(Effect.yieldNow(), 20)

/**
 * Collect every transition from now on (the stream subscribes when it starts); the returned
 * effect lets the collector catch up and gives what it has seen.
 */
const recordTransitions = <A>(stream: Stream.Stream<A>) =>
  Effect.gen(function*() {
    const seen: Array<A> = []
    yield* Effect.fork(Stream.runForEach(stream, (a) => Effect.sync(() => seen.push(a))))
    yield* settle
    return Effect.as(settle, seen)
  })

const plain = (transitions: ReadonlyArray<CircuitBreaker.Transition>) =>
  transitions.map(({ at, from, to }) => `${from}->${to}@${at}`)

/** The error of a rejected call. */
const rejection = <A, E>(exit: Exit.Exit<A, E>): CircuitBreaker.CircuitOpen => {
  const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  if (Option.isSome(error) && error.value instanceof CircuitBreaker.CircuitOpen) return error.value
  throw new Error(`expected CircuitOpen, got ${String(exit)}`)
}

const retryAfterMillis = <A, E>(exit: Exit.Exit<A, E>): number => Duration.toMillis(rejection(exit).retryAfter)

describe("CircuitBreaker", () => {
  it("CircuitOpen encodes to JSON and back with its schema, an isolated circuit's infinite retryAfter included", () => {
    const codec = Schema.parseJson(CircuitBreaker.CircuitOpen)
    for (const retryAfter of [Duration.millis(1234), Duration.infinity]) {
      const error = new CircuitBreaker.CircuitOpen({ breaker: "embedded", retryAfter })
      expect(Schema.decodeSync(codec)(Schema.encodeSync(codec)(error))).toStrictEqual(error)
    }
  })

  it.effect("seed bug 5: reads time only from Clock — TestClock alone drives Open → HalfOpen → Closed", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(2), openDuration: "10 seconds" })
      const seen = yield* recordTransitions(breaker.transitions)
      let reached = 0
      const call = breaker.execute(Effect.sync(() => ++reached))
      yield* TestClock.adjust("1 second")
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Closed")
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Open")
      expect(retryAfterMillis(yield* Effect.exit(call))).toBe(10_000)
      yield* TestClock.adjust("4 seconds")
      expect(retryAfterMillis(yield* Effect.exit(call))).toBe(6_000)
      yield* TestClock.adjust(5_999)
      expect(retryAfterMillis(yield* Effect.exit(call))).toBe(1)
      expect(reached).toBe(0)
      yield* TestClock.adjust(1)
      expect(yield* breaker.state).toBe("HalfOpen")
      expect(yield* call).toBe(1)
      expect(yield* breaker.state).toBe("Closed")
      expect(plain(yield* seen)).toEqual(["Closed->Open@1000", "Open->HalfOpen@11000", "HalfOpen->Closed@11000"])
    }))

  it.effect("seed bug 5: 100 concurrent callers in half-open — exactly `probes` reach the model, the rest fail fast", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "gpt",
        tripPolicy: CircuitBreaker.consecutive(1),
        openDuration: "30 seconds",
        halfOpen: { probes: 3, successesToClose: 3 }
      })
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* TestClock.adjust("30 seconds")
      const gate = yield* Deferred.make<void>()
      let reached = 0
      const exits: Array<Exit.Exit<string, CircuitBreaker.CircuitOpen>> = []
      const model = Effect.sync(() => ++reached).pipe(Effect.zipRight(Deferred.await(gate)), Effect.as("answer"))
      const callers = yield* Effect.fork(
        Effect.forEach(
          Array.from({ length: 100 }, (_, i) => i),
          () => Effect.tap(Effect.exit(breaker.execute(model)), (exit) => Effect.sync(() => exits.push(exit))),
          { concurrency: "unbounded", discard: true }
        )
      )
      // The rejected 97 finish while the probes are still on the wire: nobody waits.
      yield* waitFor(() => exits.length === 97)
      expect(reached).toBe(3)
      for (const exit of exits) {
        const error = rejection(exit)
        expect(error.breaker).toBe("gpt")
        expect(Duration.toMillis(error.retryAfter)).toBe(30_000)
        expect(error.message).toBe("gpt: circuit open, retry after 30s")
      }
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(callers)
      expect(exits.filter(Exit.isSuccess).length).toBe(3)
      expect(reached).toBe(3)
      expect(yield* breaker.state).toBe("Closed")
    }))

  it.effect("an interrupted probe frees its slot without a verdict", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration: "5 seconds" })
      const seen = yield* recordTransitions(breaker.transitions)
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* TestClock.adjust("5 seconds")
      let started = false
      const probe = yield* Effect.fork(breaker.execute(Effect.zipRight(Effect.sync(() => started = true), Effect.never)))
      yield* waitFor(() => started)
      const busy = yield* Effect.exit(breaker.execute(Effect.succeed("second")))
      expect(retryAfterMillis(busy)).toBe(5_000)
      yield* Fiber.interrupt(probe)
      expect(yield* breaker.state).toBe("HalfOpen")
      expect(yield* breaker.execute(Effect.succeed("next probe"))).toBe("next probe")
      expect(yield* breaker.state).toBe("Closed")
      expect(plain(yield* seen)).toEqual(["Closed->Open@0", "Open->HalfOpen@5000", "HalfOpen->Closed@5000"])
    }))

  it.effect("interruptions never count: an interrupted call in a closed circuit is no failure", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1) })
      const fiber = yield* Effect.fork(breaker.execute(Effect.never))
      yield* settle
      yield* Fiber.interrupt(fiber)
      expect(yield* Effect.exit(breaker.execute(Effect.interrupt))).toSatisfy(Exit.isInterrupted)
      expect(yield* breaker.state).toBe("Closed")
    }))

  it.effect("calls admitted before a trip run to completion but their outcomes change nothing", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration: "1 second" })
      const gate = yield* Deferred.make<string, Overloaded>()
      const slow = yield* Effect.fork(breaker.execute(Deferred.await(gate)))
      yield* settle
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* TestClock.adjust("1 second")
      expect(yield* breaker.state).toBe("HalfOpen")
      yield* Deferred.fail(gate, overloaded)
      expect(yield* Fiber.await(slow)).toEqual(Exit.fail(overloaded))
      // the old call's failure neither reopened the circuit nor took the probe slot
      expect(yield* breaker.state).toBe("HalfOpen")
      expect(yield* breaker.execute(Effect.succeed(1))).toBe(1)
      expect(yield* breaker.state).toBe("Closed")
    }))

  it.effect("seed bug 5: the rate policy forgets failures older than the window", () =>
    Effect.gen(function*() {
      const tripPolicy = CircuitBreaker.rate({ threshold: 0.5, window: "10 seconds", minimumCalls: 4 })
      const fail = (breaker: CircuitBreaker.CircuitBreaker) => Effect.exit(breaker.execute(Effect.fail(overloaded)))
      // Still inside the window (ten steps of 1 s): the fourth failure trips it.
      const inside = yield* CircuitBreaker.make({ tripPolicy })
      for (let i = 0; i < 3; i++) yield* fail(inside)
      yield* TestClock.adjust(9_999)
      yield* fail(inside)
      expect(yield* inside.state).toBe("Open")
      // Past the window: the first three are forgotten, one failure in one call is below minimumCalls.
      const past = yield* CircuitBreaker.make({ tripPolicy })
      for (let i = 0; i < 3; i++) yield* fail(past)
      yield* TestClock.adjust(10_001)
      yield* fail(past)
      expect(yield* past.state).toBe("Closed")
      for (let i = 0; i < 2; i++) yield* fail(past)
      expect(yield* past.state).toBe("Closed")
      yield* fail(past)
      expect(yield* past.state).toBe("Open")
    }))

  it.effect("rate: minimumCalls is respected and the threshold is inclusive", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.rate({ threshold: 0.5, window: "1 minute", minimumCalls: 6 })
      })
      const fail = Effect.exit(breaker.execute(Effect.fail(overloaded)))
      // 100% failures, but fewer than minimumCalls calls
      for (let i = 0; i < 5; i++) yield* fail
      expect(yield* breaker.state).toBe("Closed")
      yield* breaker.reset
      // 2 failures, 3 successes: 2/5 < 0.5 and still below minimumCalls
      yield* fail
      yield* fail
      for (let i = 0; i < 3; i++) yield* breaker.execute(Effect.void)
      expect(yield* breaker.state).toBe("Closed")
      // 3 failures of 6 calls: exactly 0.5
      yield* fail
      expect(yield* breaker.state).toBe("Open")
    }))

  it.effect("issue 17.9: rate counts calls in flight as not failed: fast failures at a batch's start do not open it", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.rate({ threshold: 0.5, window: "1 minute", minimumCalls: 3 })
      })
      // a batch starts: seven calls that will answer in 1 s, then three that fail at once
      const answers = yield* Effect.forEach(
        Array.from({ length: 7 }),
        () => Effect.fork(breaker.execute(Effect.as(Effect.sleep("1 second"), "answer"))),
        { concurrency: "unbounded" }
      )
      yield* settle
      for (let i = 0; i < 3; i++) yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      // 3 failures among 10 calls (not 3 of the 3 that have ended): 30%, below the threshold
      expect(yield* breaker.state).toBe("Closed")
      yield* TestClock.adjust("1 second")
      for (const fiber of answers) expect(yield* Fiber.join(fiber)).toBe("answer")
      // an interrupted call leaves the count too: with nothing in flight, 7 failures of 14 open it
      const interrupted = yield* Effect.fork(breaker.execute(Effect.never))
      yield* settle
      yield* Fiber.interrupt(interrupted)
      for (let i = 0; i < 3; i++) yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Closed")
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Open")
    }))

  it.effect("reset forgets every count, the rate window included", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.rate({ threshold: 0.34, window: "10 seconds", minimumCalls: 2 })
      })
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* breaker.reset
      yield* TestClock.adjust("1 second")
      // one call since the reset: below minimumCalls
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Closed")
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Open")
    }))

  it.effect("escalating openDuration via Schedule gives exact open lengths; the streak ends after a long enough close", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.consecutive(1),
        openDuration: Schedule.exponential("10 seconds")
      })
      const seen = yield* recordTransitions(breaker.transitions)
      const fail = Effect.exit(breaker.execute(Effect.fail(overloaded)))
      const probe = Effect.exit(breaker.execute(Effect.void))
      const opens: Array<number> = []
      const openFor = Effect.gen(function*() {
        const millis = retryAfterMillis(yield* probe)
        opens.push(millis)
        yield* TestClock.adjust(millis - 1)
        expect(yield* breaker.state).toBe("Open")
        yield* TestClock.adjust(1)
        expect(yield* breaker.state).toBe("HalfOpen")
      })
      yield* fail
      yield* openFor // 10 s
      yield* fail
      yield* openFor // 20 s
      yield* fail
      yield* openFor // 40 s
      yield* probe
      expect(yield* breaker.state).toBe("Closed")
      // Closed for less than the last open (40 s): the streak goes on.
      yield* TestClock.adjust(39_999)
      yield* fail
      yield* openFor // 80 s
      yield* probe
      // Closed as long as the last open: the streak starts again.
      yield* TestClock.adjust("80 seconds")
      yield* fail
      yield* openFor // 10 s
      expect(opens).toEqual([10_000, 20_000, 40_000, 80_000, 10_000])
      expect(plain(yield* seen)).toEqual([
        "Closed->Open@0",
        "Open->HalfOpen@10000",
        "HalfOpen->Open@10000",
        "Open->HalfOpen@30000",
        "HalfOpen->Open@30000",
        "Open->HalfOpen@70000",
        "HalfOpen->Closed@70000",
        "Closed->Open@109999",
        "Open->HalfOpen@189999",
        "HalfOpen->Closed@189999",
        "Closed->Open@269999",
        "Open->HalfOpen@279999"
      ])
    }))

  it.effect("isolate holds it open until reset; the transitions stream emits the exact sequence", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        name: "gpt",
        tripPolicy: CircuitBreaker.consecutive(1),
        openDuration: "10 seconds"
      })
      const seen = yield* recordTransitions(breaker.transitions)
      let reached = 0
      const call = breaker.execute(Effect.sync(() => ++reached))
      yield* breaker.isolate
      yield* breaker.isolate // already isolated: no transition
      const isolated = rejection(yield* Effect.exit(call))
      expect(isolated.retryAfter).toEqual(Duration.infinity)
      expect(isolated.message).toBe("gpt: circuit isolated until reset")
      yield* TestClock.adjust("1 hour")
      expect(yield* breaker.state).toBe("Isolated")
      expect(reached).toBe(0)
      yield* breaker.reset
      expect(yield* call).toBe(1)
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* TestClock.adjust("10 seconds")
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* breaker.isolate
      yield* TestClock.adjust("1 minute")
      expect(yield* breaker.state).toBe("Isolated")
      yield* breaker.reset
      yield* breaker.reset // already closed: no transition
      expect(yield* call).toBe(2)
      expect(plain(yield* seen)).toEqual([
        "Closed->Isolated@0",
        "Isolated->Closed@3600000",
        "Closed->Open@3600000",
        "Open->HalfOpen@3610000",
        "HalfOpen->Open@3610000",
        "Open->Isolated@3610000",
        "Isolated->Closed@3670000"
      ])
    }))

  it.effect("keyed breakers are independent, one per key, with keyed transitions", () =>
    Effect.gen(function*() {
      const keyed = yield* CircuitBreaker.makeKeyed({ tripPolicy: CircuitBreaker.consecutive(1), openDuration: "1 second" })
      const seen = yield* recordTransitions(keyed.transitions)
      const a = yield* keyed.get("a")
      const seenA = yield* recordTransitions(a.transitions)
      yield* Effect.exit(keyed.execute("a")(Effect.fail(overloaded)))
      expect(yield* keyed.state("a")).toBe("Open")
      expect(yield* keyed.state("b")).toBe("Closed")
      expect(yield* keyed.execute("b")(Effect.succeed("b answers"))).toBe("b answers")
      expect(rejection(yield* Effect.exit(keyed.execute("a")(Effect.void))).breaker).toBe("a")
      expect(yield* keyed.get("a")).toBe(a)
      yield* Effect.exit(keyed.execute("b")(Effect.fail(overloaded)))
      expect((yield* seen).map(({ key, transition }) => `${key}:${plain([transition])}`)).toEqual([
        "a:Closed->Open@0",
        "b:Closed->Open@0"
      ])
      expect(plain(yield* seenA)).toEqual(["Closed->Open@0"])
      const named = yield* CircuitBreaker.makeKeyed({ name: "llm", tripPolicy: CircuitBreaker.consecutive(1) })
      yield* Effect.exit(named.execute("gpt")(Effect.fail(overloaded)))
      expect(rejection(yield* Effect.exit(named.execute("gpt")(Effect.void))).breaker).toBe("llm/gpt")
    }))

  it.scoped("subscribe misses nothing: a transition before the stream first runs is still delivered", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration: "1 second" })
      const keyed = yield* CircuitBreaker.makeKeyed({ tripPolicy: CircuitBreaker.consecutive(1) })
      const single = yield* breaker.subscribe
      const all = yield* keyed.subscribe
      const onlyA = yield* (yield* keyed.get("a")).subscribe
      // Trip both before any stream has run, with no yield in between.
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* Effect.exit(keyed.execute("b")(Effect.fail(overloaded)))
      yield* Effect.exit(keyed.execute("a")(Effect.fail(overloaded)))
      expect(plain(Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.take(single, 1))))).toEqual(["Closed->Open@0"])
      const keyedSeen = yield* Stream.runCollect(Stream.take(all, 2))
      expect(Chunk.toReadonlyArray(keyedSeen).map(({ key, transition }) => `${key}:${plain([transition])}`)).toEqual([
        "b:Closed->Open@0",
        "a:Closed->Open@0"
      ])
      expect(plain(Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.take(onlyA, 1))))).toEqual(["Closed->Open@0"])
    }))

  it.effect("a 400 does not trip it (InvalidRequest is the caller's fault), neither counts nor resets; defects count", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(2), openDuration: "1 second" })
      for (let i = 0; i < 10; i++) {
        expect(yield* Effect.exit(breaker.execute(Effect.fail(invalid)))).toEqual(Exit.fail(invalid))
      }
      expect(yield* breaker.state).toBe("Closed")
      // 400s between two failures neither count nor reset the run of failures
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      yield* Effect.exit(breaker.execute(Effect.fail(invalid)))
      yield* Effect.exit(breaker.execute(Effect.die(new Error("bug"))))
      expect(yield* breaker.state).toBe("Open")
      // a 400 probe frees its slot and decides nothing
      yield* TestClock.adjust("1 second")
      yield* Effect.exit(breaker.execute(Effect.fail(invalid)))
      expect(yield* breaker.state).toBe("HalfOpen")
      yield* breaker.execute(Effect.void)
      expect(yield* breaker.state).toBe("Closed")
    }))

  it.effect("isFailure decides which errors count", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.consecutive(1),
        isFailure: (error) => error instanceof Overloaded
      })
      yield* Effect.exit(breaker.execute(Effect.fail("not counted")))
      expect(yield* breaker.state).toBe("Closed")
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(yield* breaker.state).toBe("Open")
    }))

  it.effect("defaults: 50% of the last 100 calls (at least 20), 5 s open, one probe; invalid options are a RangeError", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make()
      const fail = Effect.exit(breaker.execute(Effect.fail(overloaded)))
      // 19 failures in a row: below minimumCalls, still closed
      for (let i = 0; i < 19; i++) yield* fail
      expect(yield* breaker.state).toBe("Closed")
      yield* fail
      const open = rejection(yield* Effect.exit(breaker.execute(Effect.void)))
      expect(open.breaker).toBe("CircuitBreaker")
      expect(Duration.toMillis(open.retryAfter)).toBe(5_000)
      yield* TestClock.adjust("5 seconds")
      yield* breaker.execute(Effect.void)
      expect(yield* breaker.state).toBe("Closed")
      // 49 of the last 100 failed: closed; the 50th of the last 100 trips it
      for (let i = 0; i < 51; i++) yield* breaker.execute(Effect.void)
      for (let i = 0; i < 49; i++) yield* fail
      expect(yield* breaker.state).toBe("Closed")
      yield* fail
      expect(yield* breaker.state).toBe("Open")
      for (
        const options of [
          { tripPolicy: CircuitBreaker.consecutive(0) },
          { tripPolicy: CircuitBreaker.rate({ threshold: 0 }) },
          { tripPolicy: CircuitBreaker.rate({ threshold: 0.5, window: 0 }) },
          { tripPolicy: CircuitBreaker.rate({ threshold: 0.5, calls: 10, minimumCalls: 11 }) },
          { halfOpen: { probes: 1.5 } },
          { halfOpen: { successesToClose: 0 } }
        ]
      ) {
        const exit = yield* Effect.exit(CircuitBreaker.make(options))
        expect(Exit.isFailure(exit) && Cause.dieOption(exit.cause).pipe(Option.exists((e) => e instanceof RangeError)))
          .toBe(true)
      }
    }))

  it.effect("issue 6: at 20% independent faults with fast failures arriving in runs, the default never trips", () =>
    Effect.gen(function*() {
      // 2,000 outcomes, 20% failures, shuffled so that failures come in runs of up to 8:
      // consecutive(5) would trip many times; a 50% rate over the last 100 never does.
      let opens = 0
      let consecutiveOpens = 0
      const breaker = yield* CircuitBreaker.make({ onTransition: (t) => t.to === "Open" && opens++ })
      const consecutive = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.consecutive(5),
        openDuration: 0,
        onTransition: (t) => t.to === "Open" && consecutiveOpens++
      })
      let i = 0
      while (i < 2_000) {
        const run = 1 + (i * 7919) % 8
        for (let k = 0; k < run && i < 2_000; k++, i++) {
          yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
          yield* Effect.exit(consecutive.execute(Effect.fail(overloaded)))
        }
        for (let k = 0; k < run * 4 && i < 2_000; k++, i++) {
          yield* breaker.execute(Effect.void)
          yield* Effect.exit(consecutive.execute(Effect.void))
        }
        yield* TestClock.adjust("100 millis")
      }
      expect(opens).toBe(0)
      expect(consecutiveOpens).toBeGreaterThan(10)
    }))

  it.effect("a 429 (RateLimited) and permanent errors are no failures by default: a 429 storm opens nothing", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make()
      const limited = new RateLimited({ model: "m", limit: "requests", retryAfter: Duration.seconds(1) })
      const denied = new AuthenticationFailed({ model: "m", status: 401, reason: "bad key" })
      for (let i = 0; i < 200; i++) {
        yield* Effect.exit(breaker.execute(Effect.fail(i % 2 === 0 ? limited : denied)))
      }
      expect(yield* breaker.state).toBe("Closed")
    }))

  it.effect("executeWaiting: an open circuit makes the caller wait, not fail; it runs when the circuit closes", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration: "5 seconds" })
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      const waits: Array<number> = []
      const around: CircuitBreaker.WaitHook = (wait, refused) =>
        Effect.zipRight(Effect.sync(() => waits.push(Duration.toMillis(refused.retryAfter))), wait)
      let started = 0
      const call = Effect.zipRight(Effect.sync(() => ++started), Effect.sleep("1 second"))
      const fibers = yield* Effect.forEach(
        Array.from({ length: 10 }),
        () => Effect.fork(Effect.zipRight(breaker.executeWaiting(call, around), Clock.currentTimeMillis)),
        { concurrency: "unbounded" }
      )
      yield* TestClock.adjust("4999 millis")
      expect(started).toBe(0)
      yield* TestClock.adjust("1 millis") // half-open: one caller probes, the nine others wait on it
      expect(started).toBe(1)
      yield* TestClock.adjust("1 second") // the probe succeeds: closed, and every waiter runs at once
      expect(started).toBe(10)
      expect(yield* breaker.state).toBe("Closed")
      yield* TestClock.adjust("1 second")
      const ends = yield* Effect.forEach(fibers, Fiber.join)
      expect([...ends].sort()).toStrictEqual([6_000, ...Array.from({ length: 9 }, () => 7_000)])
      // each caller waited out the open time once; the nine others then waited once on the probe
      // (a busy half-open's retryAfter is the length of the open that just ended)
      expect(waits).toStrictEqual(Array.from({ length: 19 }, () => 5_000))
    }))

  it.effect("executeWaiting: a failed probe reopens it and the waiters wait the new open time; interruption ends a wait", () =>
    Effect.gen(function*() {
      const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration: "5 seconds" })
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      let calls = 0
      // every call takes 1 s; the first fails
      const flaky = Effect.suspend(() => {
        const n = ++calls
        return Effect.zipRight(Effect.sleep("1 second"), n === 1 ? Effect.fail(overloaded) : Effect.succeed(n))
      })
      const callers = yield* Effect.forEach(
        Array.from({ length: 3 }),
        () => Effect.fork(Effect.zip(Effect.exit(breaker.executeWaiting(flaky)), Clock.currentTimeMillis)),
        { concurrency: "unbounded" }
      )
      const gone = yield* Effect.fork(breaker.executeWaiting(flaky))
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(gone)
      yield* TestClock.adjust("5 seconds") // 5 s: a probe starts; 6 s: it fails and reopens it until 11 s
      expect(yield* breaker.state).toBe("Open")
      expect(calls).toBe(1)
      yield* TestClock.adjust("5 seconds") // 11 s: a second probe, which succeeds at 12 s
      expect(calls).toBe(2)
      yield* TestClock.adjust("2 seconds")
      const outcomes = yield* Effect.forEach(callers, Fiber.join)
      expect(outcomes.map(([exit, at]) => [Exit.isSuccess(exit) ? "ok" : "failed", at]).sort()).toStrictEqual([
        ["failed", 6_000],
        ["ok", 12_000],
        ["ok", 13_000]
      ])
      expect(calls).toBe(3) // the interrupted caller never called
    }))

  it.effect.prop(
    "issue 17.1: from any fractional trip and wait times, retryAfter and executeWaiting end at or after the open's end, without spinning",
    {
      trippedAt: FastCheck.double({ min: 0, max: 1e7, noNaN: true }),
      open: FastCheck.double({ min: 1e-3, max: 1e5, noNaN: true }),
      into: FastCheck.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })
    },
    ({ into, open, trippedAt }) =>
      Effect.gen(function*() {
        const openDuration = Duration.millis(open)
        const breaker = yield* CircuitBreaker.make({ tripPolicy: CircuitBreaker.consecutive(1), openDuration })
        yield* TestClock.setTime(trippedAt)
        yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
        const openUntil = trippedAt + Duration.toMillis(openDuration)
        const waitingFrom = trippedAt + into * Duration.toMillis(openDuration)
        if (!(waitingFrom < openUntil)) return
        yield* TestClock.setTime(waitingFrom)
        const retryAfter = retryAfterMillis(yield* Effect.exit(breaker.execute(Effect.void)))
        expect(waitingFrom + retryAfter).toBeGreaterThanOrEqual(openUntil)
        const waiter = yield* Effect.fork(breaker.executeWaiting(Clock.currentTimeMillis))
        // a caller that sleeps `retryAfter` (as the retry policy does) finds the circuit half-open,
        // and the waiter has its probe by then
        yield* TestClock.setTime(waitingFrom + retryAfter)
        expect(yield* Fiber.join(waiter)).toBeGreaterThanOrEqual(openUntil)
        expect(yield* breaker.state).toBe("Closed")
      }).pipe(noSpin(1000)),
    { fastCheck: { numRuns: 25 } }
  )

  it.effect("onTransition is told each transition synchronously, in order, with the open's end", () =>
    Effect.gen(function*() {
      const seen: Array<CircuitBreaker.Transition> = []
      const breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.consecutive(1),
        openDuration: "2 seconds",
        onTransition: (transition) => seen.push(transition)
      })
      yield* Effect.exit(breaker.execute(Effect.fail(overloaded)))
      expect(seen).toStrictEqual([new CircuitBreaker.Transition({ from: "Closed", to: "Open", at: 0, until: 2_000 })])
      yield* TestClock.adjust("2 seconds")
      yield* breaker.execute(Effect.void)
      expect(seen.map((t) => `${t.from}->${t.to}@${t.at}`)).toStrictEqual(["Closed->Open@0", "Open->HalfOpen@2000", "HalfOpen->Closed@2000"])
      const keyedSeen: Array<string> = []
      const keyed = yield* CircuitBreaker.makeKeyed({
        tripPolicy: CircuitBreaker.consecutive(1),
        onTransition: (key, transition) => keyedSeen.push(`${key}:${transition.to}`)
      })
      yield* Effect.exit(keyed.execute("a")(Effect.fail(overloaded)))
      expect(keyedSeen).toStrictEqual(["a:Open"])
    }))

  // ---------------------------------------------------------------------------
  // state machine against a reference model
  // ---------------------------------------------------------------------------

  type Outcome = "success" | "failure" | "invalid" | "defect" | "interrupt"
  type Op =
    | { readonly _tag: "Start" }
    | { readonly _tag: "Finish"; readonly index: number; readonly outcome: Outcome }
    | { readonly _tag: "Advance"; readonly millis: number }
    | { readonly _tag: "Isolate" }
    | { readonly _tag: "Reset" }

  interface ModelConfig {
    readonly policy:
      | { readonly _tag: "Consecutive"; readonly failures: number }
      | { readonly _tag: "Rate"; readonly threshold: number; readonly calls: number; readonly minimumCalls: number }
    readonly exponential: boolean
    readonly probes: number
    readonly successesToClose: number
  }

  const windowMillis = 10_000
  const fixedOpen = 5_000
  const base = 1_000

  /**
   * The breaker's rules written as plainly as possible: a list of timestamped outcomes for
   * the rate, the open length computed by formula.
   */
  class Model {
    state: CircuitBreaker.State = "Closed"
    epoch = 0
    time = 0
    openUntil = 0
    lastOpen = 0
    streak = 0
    closedAt = 0
    probesInFlight = 0
    successes = 0
    failuresInARow = 0
    outcomes: Array<{ readonly at: number; readonly failed: boolean }> = []
    /** Calls admitted while closed in this epoch and not finished: they count as not failed. */
    inFlight = 0
    transitions: Array<string> = []
    constructor(readonly config: ModelConfig) {}

    go(to: CircuitBreaker.State, at: number) {
      this.transitions.push(`${this.state}->${to}@${at}`)
      this.state = to
      this.epoch++
      this.probesInFlight = 0
      this.inFlight = 0
      this.successes = 0
    }
    refresh() {
      if (this.state === "Open" && this.time >= this.openUntil) this.go("HalfOpen", this.openUntil)
    }
    trip() {
      const fresh = this.state === "Closed" && this.time - this.closedAt >= this.lastOpen
      this.streak = fresh ? 1 : this.streak + 1
      this.lastOpen = this.config.exponential ? base * 2 ** (this.streak - 1) : fixedOpen
      this.openUntil = this.time + this.lastOpen
      this.go("Open", this.time)
    }
    close() {
      this.go("Closed", this.time)
      this.closedAt = this.time
      this.failuresInARow = 0
      this.outcomes = []
    }
    start(): { readonly admitted: true; readonly epoch: number } | { readonly admitted: false; readonly retryAfter: number } {
      this.refresh()
      switch (this.state) {
        case "Closed":
          this.inFlight++
          return { admitted: true, epoch: this.epoch }
        case "Open":
          return { admitted: false, retryAfter: this.openUntil - this.time }
        case "Isolated":
          return { admitted: false, retryAfter: Infinity }
        case "HalfOpen":
          if (this.probesInFlight >= this.config.probes) return { admitted: false, retryAfter: this.lastOpen }
          this.probesInFlight++
          return { admitted: true, epoch: this.epoch }
      }
    }
    finish(epoch: number, outcome: Outcome) {
      if (epoch !== this.epoch) return
      if (this.state === "Closed") this.inFlight--
      const verdict = outcome === "success" ? "success" : outcome === "failure" || outcome === "defect" ? "failure" : "ignored"
      if (this.state === "HalfOpen") {
        if (verdict === "failure") return this.trip()
        this.probesInFlight--
        if (verdict === "success" && ++this.successes >= this.config.successesToClose) this.close()
        return
      }
      if (verdict === "ignored") return
      const policy = this.config.policy
      if (policy._tag === "Consecutive") {
        if (verdict === "success") this.failuresInARow = 0
        else if (++this.failuresInARow >= policy.failures) this.trip()
        return
      }
      this.outcomes.push({ at: this.time, failed: verdict === "failure" })
      if (verdict === "failure") {
        const recent = this.outcomes.filter(({ at }) => this.time - at < windowMillis).slice(-policy.calls)
        const failed = recent.filter(({ failed }) => failed).length
        if (recent.length >= policy.minimumCalls && failed / (recent.length + this.inFlight) >= policy.threshold) this.trip()
      }
    }
    isolate() {
      this.refresh()
      if (this.state !== "Isolated") this.go("Isolated", this.time)
    }
    reset() {
      this.refresh()
      this.streak = 0
      this.lastOpen = 0
      this.failuresInARow = 0
      this.outcomes = []
      if (this.state !== "Closed") {
        this.go("Closed", this.time)
        this.closedAt = this.time
      }
    }
    currentState() {
      this.refresh()
      return this.state
    }
  }

  const configArb: FastCheck.Arbitrary<ModelConfig> = FastCheck.record({
    policy: FastCheck.oneof(
      FastCheck.record({ _tag: FastCheck.constant("Consecutive" as const), failures: FastCheck.integer({ min: 1, max: 3 }) }),
      FastCheck.record({
        _tag: FastCheck.constant("Rate" as const),
        threshold: FastCheck.constantFrom(0.34, 0.5, 1),
        calls: FastCheck.integer({ min: 4, max: 8 }),
        minimumCalls: FastCheck.integer({ min: 1, max: 4 })
      })
    ),
    exponential: FastCheck.boolean(),
    probes: FastCheck.integer({ min: 1, max: 3 }),
    successesToClose: FastCheck.integer({ min: 1, max: 2 })
  })

  const opArb: FastCheck.Arbitrary<Op> = FastCheck.oneof(
    { weight: 12, arbitrary: FastCheck.constant({ _tag: "Start" as const }) },
    {
      weight: 12,
      arbitrary: FastCheck.record({
        _tag: FastCheck.constant("Finish" as const),
        index: FastCheck.nat(),
        outcome: FastCheck.constantFrom<Array<Outcome>>("success", "failure", "failure", "invalid", "defect", "interrupt")
      })
    },
    {
      weight: 6,
      arbitrary: FastCheck.record({
        _tag: FastCheck.constant("Advance" as const),
        millis: FastCheck.oneof(FastCheck.constantFrom(1, 999, 1_000, 5_000, 10_000), FastCheck.integer({ min: 0, max: 12_000 }))
      })
    },
    { weight: 1, arbitrary: FastCheck.constant({ _tag: "Isolate" as const }) },
    { weight: 1, arbitrary: FastCheck.constant({ _tag: "Reset" as const }) }
  )

  const opsArb = FastCheck.array(opArb, { maxLength: 100, size: "max" })

  it.effect.prop(
    "state machine: random successes, failures, 400s, defects, interrupts, clock advances, isolate and reset agree with a reference model step by step",
    [configArb, opsArb],
    ([config, ops]) =>
      Effect.gen(function*() {
        const breaker = yield* CircuitBreaker.make({
          tripPolicy: config.policy._tag === "Consecutive"
            ? CircuitBreaker.consecutive(config.policy.failures)
            : CircuitBreaker.rate({
              threshold: config.policy.threshold,
              window: windowMillis,
              calls: config.policy.calls,
              minimumCalls: config.policy.minimumCalls
            }),
          openDuration: config.exponential ? Schedule.exponential(base) : fixedOpen,
          halfOpen: { probes: config.probes, successesToClose: config.successesToClose }
        })
        const seen = yield* recordTransitions(breaker.transitions)
        const model = new Model(config)
        const inFlight: Array<{
          readonly fiber: Fiber.RuntimeFiber<number, Overloaded | InvalidRequest | CircuitBreaker.CircuitOpen>
          readonly gate: Deferred.Deferred<number, Overloaded | InvalidRequest>
          readonly epoch: number
        }> = []
        let reached = 0

        for (const op of ops) {
          switch (op._tag) {
            case "Start": {
              const expected = model.start()
              const gate = yield* Deferred.make<number, Overloaded | InvalidRequest>()
              const before = reached
              const fiber = yield* Effect.fork(
                breaker.execute(Effect.zipRight(Effect.sync(() => ++reached), Deferred.await(gate)))
              )
              yield* waitFor(() => reached > before || fiber.unsafePoll() !== null)
              if (expected.admitted) {
                expect(reached).toBe(before + 1)
                inFlight.push({ fiber, gate, epoch: expected.epoch })
              } else {
                const exit = fiber.unsafePoll()
                expect(exit).not.toBeNull()
                if (exit !== null) expect(retryAfterMillis(exit)).toBe(expected.retryAfter)
              }
              break
            }
            case "Finish": {
              if (inFlight.length === 0) break
              const [call] = inFlight.splice(op.index % inFlight.length, 1)
              if (call === undefined) break
              switch (op.outcome) {
                case "success":
                  yield* Deferred.succeed(call.gate, 1)
                  break
                case "failure":
                  yield* Deferred.fail(call.gate, overloaded)
                  break
                case "invalid":
                  yield* Deferred.fail(call.gate, invalid)
                  break
                case "defect":
                  yield* Deferred.die(call.gate, new Error("boom"))
                  break
                case "interrupt":
                  yield* Fiber.interrupt(call.fiber)
              }
              const exit = yield* Fiber.await(call.fiber)
              expect(
                op.outcome === "success" ? Exit.isSuccess(exit) : op.outcome === "interrupt"
                  ? Exit.isInterrupted(exit)
                  : op.outcome === "defect"
                  ? Exit.isFailure(exit) && Cause.isDie(exit.cause)
                  : Exit.isFailure(exit) && !Exit.isInterrupted(exit)
              ).toBe(true)
              model.finish(call.epoch, op.outcome)
              break
            }
            case "Advance":
              yield* TestClock.adjust(op.millis)
              model.time += op.millis
              break
            case "Isolate":
              yield* breaker.isolate
              model.isolate()
              break
            case "Reset":
              yield* breaker.reset
              model.reset()
          }
          expect(yield* breaker.state).toBe(model.currentState())
        }
        expect(plain(yield* seen)).toEqual(model.transitions)
      }),
    { timeout: 120_000, fastCheck: { numRuns: 200 } }
  )
})
