import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Clock,
  Duration,
  Effect,
  Either,
  Exit,
  FastCheck as fc,
  Fiber,
  Option,
  Stream,
  Supervisor,
  TestClock,
  TestContext
} from "effect"
import * as Bulkhead from "../../src/concurrency/Bulkhead.js"
import { ModelTimeout } from "../../src/model/AiModel.js"
import * as Timeout from "../../src/policy/Timeout.js"
import { fractional, noSpin } from "../support/spinGuard.js"

const timeout = (seconds: number) => new ModelTimeout({ model: "m", timeout: Duration.seconds(seconds) })

/** The stream's elements, each tagged with the time it arrived, then how the stream ended. */
const collectTimed = <A, E>(stream: Stream.Stream<A, E>) =>
  Effect.gen(function* () {
    const seen: Array<string> = []
    const end = yield* stream.pipe(
      Stream.runForEach((a) => Effect.map(Clock.currentTimeMillis, (t) => void seen.push(`${a}@${t}`))),
      Effect.either
    )
    return { seen, end, at: yield* Clock.currentTimeMillis }
  })

/** Emits each delay's value after sleeping that many milliseconds since the previous one. */
const chunksAfter = (...delays: Array<number>) =>
  Stream.mapEffect(Stream.fromIterable(delays), (ms) => Effect.as(Effect.sleep(ms), ms))

/**
 * Runs `program` with every fiber it starts (attempts and the shared timer) tracked, moves the
 * clock to `lastEnd` (when its last call ends), then waits for the fibers still running without
 * moving the clock: a timer left sleeping towards a deadline would hang here. Returns the
 * program's result and how many fibers were still running then.
 */
const endsWithoutTimer = <A, E>(lastEnd: number, program: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const supervisor = yield* Supervisor.track
    const fiber = yield* Effect.fork(Effect.supervised(program, supervisor))
    yield* TestClock.adjust(lastEnd)
    const result = yield* Fiber.join(fiber)
    yield* Fiber.awaitAll(yield* supervisor.value)
    expect(yield* Clock.currentTimeMillis).toBe(lastEnd)
    return { result, stillRunning: (yield* supervisor.value).length }
  })

describe("Timeout.attempt", () => {
  it.effect("at fractional clock times (TestClock floors its nanoseconds) the timer fires; it never spins on a zero-length sleep", () =>
    Effect.gen(function*() {
      const limit = Timeout.attempt({ duration: "2 seconds", model: "m" })
      for (const start of [15_504.37182619695, 1_084.5124616389423, 64_373.868037285705]) {
        yield* TestClock.setTime(start)
        const fiber = yield* Effect.fork(Effect.exit(limit(Effect.never)))
        yield* TestClock.adjust("2001 millis")
        const exit = yield* Fiber.join(fiber)
        expect(Exit.isFailure(exit) && Cause.failureOption(exit.cause).pipe(Option.exists((e) => e._tag === "ModelTimeout")))
          .toBe(true)
      }
    }))

  it.effect("fails with ModelTimeout, carrying the model and the duration, exactly at the deadline", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(Timeout.attempt({ duration: "1 second", model: "m" })(Effect.never))
      yield* TestClock.adjust("999 millis")
      expect(yield* Fiber.poll(fiber)).toEqual(Option.none())
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.poll(fiber)).toEqual(Option.some(Exit.fail(timeout(1))))
      expect(timeout(1).message).toBe("m: no answer within 1s")
    }))

  it.effect("a success or a failure before the deadline is returned unchanged", () =>
    Effect.gen(function* () {
      const attempt = Timeout.attempt({ duration: "1 second", model: "m" })
      const success = yield* Effect.fork(attempt(Effect.as(Effect.sleep("999 millis"), "answer")))
      const failure = yield* Effect.fork(attempt(Effect.zipRight(Effect.sleep("500 millis"), Effect.fail("refused"))))
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(success)).toBe("answer")
      expect(yield* Fiber.await(failure)).toEqual(Exit.fail("refused"))
    }))

  it.effect("an infinite duration is no timeout: the effect or stream is returned as it is (no fibers)", () =>
    Effect.gen(function* () {
      const options = { duration: Duration.infinity, model: "m" }
      const call = Effect.as(Effect.sleep("1 day"), "late")
      const stream = chunksAfter(1)
      expect(Timeout.attempt(options)(call)).toBe(call)
      expect(Timeout.firstChunk(options)(stream)).toBe(stream)
      expect(Timeout.betweenChunks(options)(stream)).toBe(stream)
    }))

  it.effect(
    "pitfall (opossum, p-queue): a timed-out attempt keeps its permit until its 5 s cleanup has run",
    () =>
      Effect.gen(function* () {
        const bulkhead = yield* Bulkhead.make({ permits: 1 })
        const attempt = Timeout.attempt({ duration: "1 second", model: "m" })
        // Ignores interruption for 5 s (say, an uninterruptible socket teardown) after a 1 s timeout.
        const stubborn = Effect.never.pipe(Effect.ensuring(Effect.sleep("5 seconds")))
        const first = yield* Effect.fork(
          bulkhead.withPermit(Effect.either(attempt(stubborn))).pipe(
            Effect.zip(Clock.currentTimeMillis)
          )
        )
        yield* TestClock.adjust(0)
        const second = yield* Effect.fork(bulkhead.withPermit(Clock.currentTimeMillis))

        yield* TestClock.adjust("1 second")
        expect(yield* Fiber.poll(first)).toEqual(Option.none())
        expect(yield* bulkhead.available).toBe(0)
        yield* TestClock.adjust("5 seconds")
        expect(yield* Fiber.poll(first)).toEqual(Option.some(Exit.succeed([Either.left(timeout(1)), 6000])))
        expect(yield* Fiber.poll(second)).toEqual(Option.some(Exit.succeed(6000)))
        expect(yield* bulkhead.available).toBe(1)
      })
  )

  it.effect("interrupting the caller ends the attempt, and the permit is held until it has stopped", () =>
    Effect.gen(function* () {
      const bulkhead = yield* Bulkhead.make({ permits: 1 })
      const attempt = Timeout.attempt({ duration: "10 seconds", model: "m" })
      let cleanedUpAt = -1
      const call = Effect.never.pipe(
        Effect.ensuring(
          Effect.zipRight(
            Effect.sleep("2 seconds"),
            Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => (cleanedUpAt = t)))
          )
        )
      )
      const caller = yield* Effect.fork(bulkhead.withPermit(attempt(call)))
      yield* TestClock.adjust(0)
      const next = yield* Effect.fork(bulkhead.withPermit(Clock.currentTimeMillis))
      yield* TestClock.adjust("1 second")

      const interrupted = yield* Effect.fork(Fiber.interrupt(caller))
      yield* TestClock.adjust("2 seconds")
      expect(Exit.isInterrupted(yield* Fiber.join(interrupted))).toBe(true)
      expect(cleanedUpAt).toBe(3000)
      expect(yield* Fiber.join(next)).toBe(3000)
      expect(yield* bulkhead.available).toBe(1)
    }))

  it.effect("pitfall (opossum): one call timing out does not touch another call in flight", () =>
    Effect.gen(function* () {
      const attempt = Timeout.attempt({ duration: "2 seconds", model: "m" })
      let interrupted = 0
      const call = (ms: number) =>
        Effect.as(Effect.sleep(ms), ms).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted++)))
      const slow = yield* Effect.fork(attempt(call(5000)))
      const fast = yield* Effect.fork(Effect.zip(attempt(call(1900)), Clock.currentTimeMillis))
      const late = yield* Effect.fork(
        Effect.zipRight(Effect.sleep("1 second"), Effect.zip(attempt(call(1500)), Clock.currentTimeMillis))
      )
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.await(slow)).toEqual(Exit.fail(timeout(2)))
      expect(yield* Fiber.join(fast)).toEqual([1900, 1900])
      expect(yield* Fiber.join(late)).toEqual([1500, 2500])
      expect(interrupted).toBe(1)
    }))

  it.effect.prop(
    "invariant: concurrent calls with staggered starts each end at their own answer or exactly their own deadline",
    {
      // Odd answer times never tie with a 1 s deadline; null never answers.
      calls: fc.array(
        fc.record({
          start: fc.integer({ min: 0, max: 3000 }),
          takes: fc.option(fc.integer({ min: 0, max: 1000 }).map((n) => 2 * n + 1))
        }),
        { minLength: 1, maxLength: 8 }
      )
    },
    ({ calls }) =>
      Effect.gen(function*() {
        const attempt = Timeout.attempt({ duration: "1 second", model: "m" })
        let interrupted = 0
        const call = (takes: number | null) =>
          (takes === null ? Effect.never : Effect.as(Effect.sleep(takes), takes)).pipe(
            Effect.onInterrupt(() => Effect.sync(() => interrupted++))
          )
        const ends = calls.map(({ start, takes }) => start + (takes !== null && takes < 1000 ? takes : 1000))
        const { result, stillRunning } = yield* endsWithoutTimer(
          Math.max(...ends),
          Effect.forEach(
            calls,
            ({ start, takes }) =>
              Effect.zipRight(
                Effect.sleep(start),
                Effect.zip(Effect.either(attempt(call(takes))), Clock.currentTimeMillis)
              ),
            { concurrency: "unbounded" }
          )
        )
        expect(result).toEqual(calls.map(({ takes }, i) =>
          [takes !== null && takes < 1000 ? Either.right(takes) : Either.left(timeout(1)), ends[i]]
        ))
        expect(interrupted).toBe(calls.filter(({ takes }) => takes === null || takes > 1000).length)
        expect(stillRunning).toBe(0)
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect("calls that all answer early leave no timer behind: every fiber has ended when the last call returns", () =>
    Effect.gen(function*() {
      const attempt = Timeout.attempt({ duration: "30 seconds", model: "m" })
      const { result, stillRunning } = yield* endsWithoutTimer(
        300,
        Effect.zip(
          Effect.forEach([300, 100, 200], (ms) => attempt(Effect.as(Effect.sleep(ms), ms)), {
            concurrency: "unbounded"
          }),
          Effect.forEach([1, 2, 3], (n) => attempt(Effect.succeed(n)))
        )
      )
      expect(result).toEqual([[300, 100, 200], [1, 2, 3]])
      expect(stillRunning).toBe(0)
    }))

  it.effect("interrupting the caller is its interruption, never a timeout; later calls time out as before", () =>
    Effect.gen(function*() {
      const attempt = Timeout.attempt({ duration: "1 second", model: "m" })
      let interrupted = 0
      const call = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted++)))
      const caller = yield* Effect.fork(attempt(call))
      yield* TestClock.adjust("999 millis")
      const exit = yield* Fiber.interrupt(caller)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(Exit.isFailure(exit) ? Cause.failures(exit.cause) : undefined).toEqual(Chunk.empty())
      expect(interrupted).toBe(1)

      const next = yield* Effect.fork(Effect.zip(Effect.either(attempt(call)), Clock.currentTimeMillis))
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.join(next)).toEqual([Either.left(timeout(1)), 1999])
      expect(interrupted).toBe(2)
    }))

  it.effect("a zero duration: an attempt that has answered when the timer runs keeps its answer, as in a race it won", () =>
    Effect.gen(function*() {
      const attempt = Timeout.attempt({ duration: 0, model: "m" })
      const atOnce = Effect.succeed("at once")
      const afterAYield = Effect.as(Effect.yieldNow(), "after a yield")
      expect(yield* Effect.either(attempt(atOnce))).toEqual(Either.right("at once"))
      expect(yield* Effect.either(attempt(afterAYield))).toEqual(Either.left(timeout(0)))
    }))

  it.effect("a clock set back mid-flight: a later call with an earlier deadline times out at its own deadline", () =>
    Effect.gen(function*() {
      const attempt = Timeout.attempt({ duration: "1 second", model: "m" })
      const timed = Effect.zip(Effect.either(attempt(Effect.never)), Clock.currentTimeMillis)
      yield* TestClock.setTime(5000)
      const first = yield* Effect.fork(timed)
      yield* TestClock.adjust(0)
      yield* TestClock.setTime(0)
      const second = yield* Effect.fork(timed)
      yield* TestClock.adjust("1 second")
      expect(yield* Fiber.join(second)).toEqual([Either.left(timeout(1)), 1000])
      expect(yield* Fiber.poll(first)).toEqual(Option.none())
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.join(first)).toEqual([Either.left(timeout(1)), 6000])
    }))

  it.effect("one instance used under two TestClocks at once: each call times out on its own clock", () =>
    Effect.gen(function*() {
      const attempt = Timeout.attempt({ duration: "1 second", model: "m" })
      const timed = Effect.zip(Effect.either(attempt(Effect.never)), Clock.currentTimeMillis)
      const onThisClock = yield* Effect.fork(timed)
      yield* TestClock.adjust("500 millis")
      // Another test, run meanwhile with its own TestClock, shares the instance.
      const otherTest = Effect.gen(function*() {
        const fiber = yield* Effect.fork(timed)
        yield* TestClock.adjust("2 seconds")
        return yield* Fiber.join(fiber)
      })
      const onOtherClock = yield* Effect.promise(() =>
        Effect.runPromise(Effect.provide(otherTest, TestContext.TestContext))
      )
      expect(onOtherClock).toEqual([Either.left(timeout(1)), 1000])
      expect(yield* Fiber.poll(onThisClock)).toEqual(Option.none())
      yield* TestClock.adjust("500 millis")
      expect(yield* Fiber.join(onThisClock)).toEqual([Either.left(timeout(1)), 1000])
    }))
  it.effect.prop(
    "issue 17.1: calls with a fractional timeout microseconds apart each time out at their own deadline, not a microsecond before",
    { start: fractional(0, 1e7), duration: fractional(1e-2, 1e5), apart: fractional(8e-6, 9e-4) },
    ({ apart, duration, start }) =>
      Effect.gen(function*() {
        const attempt = Timeout.attempt({ duration: Duration.millis(duration), model: "m" })
        const millis = Duration.toMillis(Duration.millis(duration))
        yield* TestClock.setTime(start)
        const first = yield* Effect.fork(attempt(Effect.never))
        yield* TestClock.setTime(start + apart)
        const second = yield* Effect.fork(attempt(Effect.never))
        // deadlines are on the (floored) nanosecond time line: each fires within two nanoseconds of its moment
        const at = (t: number) => Effect.zipRight(TestClock.setTime(t), Effect.sync(() => [first.unsafePoll() !== null, second.unsafePoll() !== null]))
        expect(yield* at(start + millis - 2e-6)).toStrictEqual([false, false])
        expect(yield* at(start + millis + 3e-6)).toStrictEqual([true, false])
        expect(yield* at(start + apart + millis - 2e-6)).toStrictEqual([true, false])
        expect(yield* at(start + apart + millis + 3e-6)).toStrictEqual([true, true])
        expect(yield* Fiber.await(second)).toStrictEqual(Exit.fail(new ModelTimeout({ model: "m", timeout: Duration.millis(duration) })))
      }).pipe(noSpin(1000)),
    { fastCheck: { numRuns: 25 } }
  )
})

describe("Timeout.firstChunk", () => {
  const firstChunk = Timeout.firstChunk({ duration: "1 second", model: "m" })

  it.effect("fails exactly at the deadline when the first chunk is late", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(collectTimed(firstChunk(chunksAfter(1500, 10))))
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(fiber)).toEqual({ seen: [], end: Either.left(timeout(1)), at: 1000 })
    }))

  it.effect("once the first chunk is in, later gaps may be long", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(collectTimed(firstChunk(chunksAfter(999, 5000, 3000))))
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(fiber)).toEqual({
        seen: ["999@999", "5000@5999", "3000@8999"],
        end: Either.right(undefined),
        at: 8999
      })
    }))
})

describe("Timeout.betweenChunks", () => {
  const betweenChunks = Timeout.betweenChunks({ duration: "1 second", model: "m" })

  it.effect("fails exactly one duration after the last chunk when the stream stalls", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(collectTimed(betweenChunks(chunksAfter(500, 800, 1500))))
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(fiber)).toEqual({
        seen: ["500@500", "800@1300"],
        end: Either.left(timeout(1)),
        at: 2300
      })
    }))

  it.effect("fails when the first chunk takes longer than the duration", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(collectTimed(betweenChunks(chunksAfter(1001))))
      yield* TestClock.adjust("10 seconds")
      expect(yield* Fiber.join(fiber)).toEqual({ seen: [], end: Either.left(timeout(1)), at: 1000 })
    }))

  it.effect("never fires while chunks keep coming, however long the stream runs", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(collectTimed(betweenChunks(chunksAfter(...Array(20).fill(999)))))
      yield* TestClock.adjust("30 seconds")
      const { seen, end, at } = yield* Fiber.join(fiber)
      expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => `999@${999 * (i + 1)}`))
      expect(end).toEqual(Either.right(undefined))
      expect(at).toBe(19980)
    }))
})
