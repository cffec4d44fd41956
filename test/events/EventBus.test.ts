import { describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, Effect, Exit, FastCheck as fc, Fiber, Option, Stream, TestClock } from "effect"
import * as AgentEvent from "../../src/events/AgentEvent.js"
import * as EventBus from "../../src/events/EventBus.js"

const started = (taskId: string) => new AgentEvent.TaskStarted({ taskId })
const finished = (taskId: string) =>
  new AgentEvent.TaskFinished({ taskId, status: "succeeded", attempts: 1, durationMs: 10 })
const ids = (events: Iterable<AgentEvent.AgentEvent>) =>
  [...events].map((event) => ("taskId" in event ? event.taskId : event._tag))

/** Lets every forked reader and handler run until it waits again. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("EventBus", () => {
  it.scoped("a subscriber gets every event from when it subscribed, in order", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      yield* bus.publish(started("before"))
      const events = yield* bus.subscribe()
      const reader = yield* Effect.fork(Stream.runCollect(Stream.take(events, 3)))
      yield* bus.publish(started("a"))
      bus.unsafePublish(started("b"))
      yield* bus.publish(finished("a"))
      expect(ids(yield* Fiber.join(reader))).toEqual(["a", "b", "a"])
    }))

  it.scoped("seed bug 7: a throwing, failing or dying handler does not break the publisher or the other handlers", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const seen: Array<string> = []
      const throws = yield* bus.on("TaskStarted", (): Effect.Effect<void> => {
        throw new Error("listener bug")
      })
      const fails = yield* bus.on("TaskStarted", () => Effect.fail("nope"))
      const dies = yield* bus.on("TaskStarted", () => Effect.die("boom"))
      const good = yield* bus.on("TaskStarted", (event) => Effect.sync(() => void seen.push(event.taskId)))
      for (const id of ["a", "b", "c"]) yield* bus.publish(started(id))
      yield* settle
      expect(seen).toEqual(["a", "b", "c"])
      expect(yield* throws.failures).toBe(3)
      expect(yield* fails.failures).toBe(3)
      expect(yield* dies.failures).toBe(3)
      expect([yield* good.handled, yield* good.failures]).toEqual([3, 0])
    }))

  it.scoped("a stalled subscriber never blocks the publisher or delays the others; its drops are counted exactly", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const sliding = yield* bus.subscription({ capacity: 4, strategy: "sliding" })
      const dropping = yield* bus.subscription({ capacity: 4, strategy: "dropping" })
      const fast = yield* bus.subscribe()
      const all: Array<string> = []
      yield* Effect.fork(Stream.runForEach(fast, (event) => Effect.sync(() => void all.push(ids([event])[0]!))))
      for (let i = 1; i <= 10; i++) {
        yield* bus.publish(started(`e${i}`))
        yield* Effect.yieldNow()
      }
      expect(all).toEqual(["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10"])
      expect(yield* sliding.dropped).toBe(6)
      expect(yield* dropping.dropped).toBe(6)
      expect(yield* bus.dropped).toBe(12)
      // sliding kept the newest four, dropping the oldest four
      expect(ids(yield* Stream.runCollect(Stream.take(sliding.stream, 4)))).toEqual(["e7", "e8", "e9", "e10"])
      expect(ids(yield* Stream.runCollect(Stream.take(dropping.stream, 4)))).toEqual(["e1", "e2", "e3", "e4"])
    }))

  it.effect.prop(
    "invariant: an unread subscriber drops exactly max(0, published - capacity), and keeps the rest",
    {
      capacity: fc.integer({ min: 1, max: 20 }),
      published: fc.integer({ min: 0, max: 60 }),
      strategy: fc.constantFrom("sliding" as const, "dropping" as const)
    },
    ({ capacity, published, strategy }) =>
      Effect.scoped(Effect.gen(function*() {
        const bus = yield* EventBus.make()
        const subscription = yield* bus.subscription({ capacity, strategy })
        for (let i = 0; i < published; i++) bus.unsafePublish(started(String(i)))
        const kept = Math.min(capacity, published)
        expect(yield* subscription.dropped).toBe(published - kept)
        expect(yield* subscription.buffered).toBe(kept)
        const expected = Array.from({ length: kept }, (_, i) => String(strategy === "sliding" ? published - kept + i : i))
        expect(ids(yield* Stream.runCollect(Stream.take(subscription.stream, kept)))).toEqual(expected)
      }))
  )

  it.scoped("suspend: a full buffer suspends the publisher until the subscriber reads, and loses nothing", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const subscription = yield* bus.subscription({ capacity: 2, strategy: "suspend" })
      let published = 0
      const publisher = yield* Effect.fork(Effect.forEach(
        ["a", "b", "c", "d", "e"],
        (id) => Effect.tap(bus.publish(started(id)), () => Effect.sync(() => published++)),
        { discard: true }
      ))
      yield* settle
      expect(published).toBe(2) // the third publish waits for room
      expect(ids(yield* Stream.runCollect(Stream.take(subscription.stream, 5)))).toEqual(["a", "b", "c", "d", "e"])
      yield* Fiber.join(publisher)
      expect(published).toBe(5)
      expect(yield* subscription.dropped).toBe(0)
    }))

  it.scoped("unsafePublish (a breaker's transition hook) never suspends: a full suspend buffer keeps its events in order", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const subscription = yield* bus.subscription({ capacity: 2, strategy: "suspend" })
      yield* bus.publish(started("a"))
      yield* bus.publish(started("b"))
      const waiting = yield* Effect.fork(bus.publish(started("c")))
      yield* settle
      bus.unsafePublish(new AgentEvent.BreakerTransition({ breaker: "m", from: "Closed", to: "Open", atMillis: 0 }))
      bus.unsafePublish(finished("d"))
      expect(ids(yield* Stream.runCollect(Stream.take(subscription.stream, 5)))).toEqual([
        "a",
        "b",
        "c",
        "BreakerTransition",
        "d"
      ])
      yield* Fiber.join(waiting)
      expect(yield* subscription.dropped).toBe(0)
    }))

  it.scoped("an interrupted publisher withdraws its event from a full suspend buffer", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const subscription = yield* bus.subscription({ capacity: 1, strategy: "suspend" })
      yield* bus.publish(started("a"))
      const waiting = yield* Effect.fork(bus.publish(started("withdrawn")))
      yield* settle
      yield* Fiber.interrupt(waiting)
      yield* bus.publish(started("c")).pipe(Effect.fork)
      expect(ids(yield* Stream.runCollect(Stream.take(subscription.stream, 2)))).toEqual(["a", "c"])
    }))

  it.effect("seed bug 7: emitAndAwait runs every handler concurrently and reports each outcome, failures included", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      yield* bus.on("TaskFinished", () => Effect.sleep("1 second"), { name: "slow" })
      yield* bus.on("TaskFinished", () => Effect.fail("disk full"), { name: "fails" })
      yield* bus.on("TaskFinished", () => Effect.zipRight(Effect.sleep("1 second"), Effect.die("bug")), { name: "dies" })
      yield* bus.on("TaskStarted", () => Effect.void, { name: "other tag" })
      const emitted = yield* Effect.fork(bus.emitAndAwait(finished("t")))
      yield* TestClock.adjust("999 millis")
      expect(emitted.unsafePoll()).toBeNull()
      // both one-second handlers run at once: done after 1 s, not 2 s
      yield* TestClock.adjust("1 millis")
      const outcomes = yield* Fiber.join(emitted)
      expect(outcomes.map((outcome) => [outcome._tag, outcome.handler])).toEqual([
        ["Handled", "slow"],
        ["Failed", "fails"],
        ["Failed", "dies"]
      ])
      const [, failed, died] = outcomes
      expect(failed?._tag === "Failed" && Cause.failureOption(failed.cause)).toEqual(Option.some("disk full"))
      expect(died?._tag === "Failed" && Cause.dieOption(died.cause)).toEqual(Option.some("bug"))
    }).pipe(Effect.scoped))

  it.effect("emitAndAwait waits for a handler's earlier events first, and says Dropped or TimedOut where it must", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const handled: Array<string> = []
      yield* bus.on("TaskFinished", (event) =>
        Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => void handled.push(event.taskId))), {
        name: "ordered"
      })
      // stalls on its first event; its one-slot buffer then holds the second and drops the rest
      yield* bus.on("TaskFinished", () => Effect.never, { name: "stalled", capacity: 1, strategy: "dropping" })
      yield* bus.publish(finished("first"))
      yield* settle // both handlers have taken "first"
      yield* bus.publish(finished("second"))
      const emitted = yield* Effect.fork(bus.emitAndAwait(finished("now")))
      yield* TestClock.adjust("2999 millis")
      expect(handled).toEqual(["first", "second"])
      expect(emitted.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      expect(handled).toEqual(["first", "second", "now"])
      expect((yield* Fiber.join(emitted)).map((outcome) => [outcome._tag, outcome.handler])).toEqual([
        ["Handled", "ordered"],
        ["Dropped", "stalled"]
      ])
      const timedOut = yield* Effect.fork(bus.emitAndAwait(finished("late"), { timeout: "500 millis" }))
      yield* TestClock.adjust("500 millis")
      expect((yield* Fiber.join(timedOut)).map((outcome) => [outcome._tag, outcome.handler])).toEqual([
        ["TimedOut", "ordered"],
        ["Dropped", "stalled"]
      ])
    }).pipe(Effect.scoped))

  it.scoped("on(tags, handler) is typed by tag and gets only those events", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const seen: Array<string> = []
      yield* bus.on(["RetryScheduled", "RetryGivenUp"], (event) =>
        Effect.sync(() => {
          // `event` is RetryScheduled | RetryGivenUp: both have `model`
          seen.push(`${event._tag}:${event.model}`)
        }))
      const error = { _tag: "Overloaded", message: "m: overloaded" }
      yield* bus.publish(started("t"))
      yield* bus.publish(new AgentEvent.RetryScheduled({ taskId: "t", model: "m", attempt: 2, delayMillis: 100, error }))
      yield* bus.publish(
        new AgentEvent.RetryGivenUp({ taskId: "t", model: "m", reason: "max-attempts", attempts: 3, error })
      )
      yield* settle
      expect(seen).toEqual(["RetryScheduled:m", "RetryGivenUp:m"])
    }))

  it.effect("issue 12: hasSubscribers and wants(tag) say whether anyone listens, so nobody builds unread events", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      expect([bus.hasSubscribers(), bus.wants("TaskStarted")]).toEqual([false, false])
      yield* Effect.scoped(Effect.gen(function*() {
        yield* bus.on("RetryScheduled", () => Effect.void)
        expect([bus.hasSubscribers(), bus.wants("RetryScheduled"), bus.wants("TaskStarted")]).toEqual([true, true, false])
        yield* Effect.scoped(Effect.gen(function*() {
          yield* bus.subscribe()
          expect(bus.wants("TaskStarted")).toBe(true)
        }))
        expect(bus.wants("TaskStarted")).toBe(false)
      }))
      expect([bus.hasSubscribers(), bus.wants("RetryScheduled")]).toEqual([false, false])
      // publishing to nobody is a no-op
      yield* bus.publish(started("nobody"))
      expect(yield* bus.dropped).toBe(0)
    }).pipe(Effect.scoped))

  it.effect("when the bus shuts down, a subscriber reads what it has buffered and its stream ends", () =>
    Effect.gen(function*() {
      const events = yield* Effect.scoped(Effect.gen(function*() {
        const bus = yield* EventBus.make()
        const stream = yield* bus.subscribe()
        yield* bus.publish(started("a"))
        yield* bus.publish(started("b"))
        return stream
      }))
      expect(ids(yield* Stream.runCollect(events))).toEqual(["a", "b"])
    }).pipe(Effect.scoped))

  it.scoped("events: subscribes when the stream runs, and unsubscribes when it ends", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.make()
      const reader = yield* Effect.fork(Stream.runCollect(Stream.take(bus.events, 2)))
      yield* settle
      expect(bus.hasSubscribers()).toBe(true)
      yield* bus.publish(started("a"))
      yield* bus.publish(started("b"))
      expect(ids(yield* Fiber.join(reader))).toEqual(["a", "b"])
      expect(bus.hasSubscribers()).toBe(false)
    }))

  it.effect("a capacity that is not a positive integer is a defect", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(EventBus.make({ capacity: 0 })))
      expect(Exit.isFailure(exit) && String(exit.cause)).toContain("capacity must be a positive integer")
    }))
})

describe("AgentEvent", () => {
  const error = { _tag: "Overloaded", message: "m: overloaded" }
  const every: ReadonlyArray<AgentEvent.AgentEvent> = [
    new AgentEvent.TaskQueued({ taskId: "t" }),
    new AgentEvent.TaskStarted({ taskId: "t" }),
    new AgentEvent.RetryScheduled({ taskId: "t", model: "m", attempt: 2, delayMillis: 250, error }),
    new AgentEvent.RetryGivenUp({ taskId: "t", model: "m", reason: "budget", attempts: 2, error }),
    new AgentEvent.BreakerTransition({ breaker: "m", from: "Closed", to: "Open", atMillis: 5 }),
    new AgentEvent.BudgetWaited({ taskId: "t", model: "m", budget: "tokens", amount: 900, waitMillis: 1200 }),
    new AgentEvent.FallbackUsed({ taskId: "t", tier: "backup", failures: [{ tier: "m", error }] }),
    new AgentEvent.HedgeStarted({ taskId: "t", model: "m", hedge: 1, afterMillis: 300 }),
    new AgentEvent.Coalesced({ taskId: "t", key: "k", waiters: 2 }),
    new AgentEvent.Memoized({ taskId: "t", key: "k" }),
    new AgentEvent.StreamContinued({ taskId: "t", model: "m", deliveredChars: 42, error }),
    new AgentEvent.TaskFinished({ taskId: "t", status: "failed", attempts: 3, durationMs: 900, error }),
    new AgentEvent.TaskFinished({ taskId: "t", status: "succeeded", attempts: 1, durationMs: 9 }),
    new AgentEvent.ProgressReported({
      total: 10, done: 4, succeeded: 3, failed: 1, invalid: 0, skipped: 0, retries: 2, inFlight: 2,
      elapsedMillis: 2000, perSecond: 2, etaMillis: 3000
    })
  ]

  it("every kind of event is in the union and its tag list", () => {
    expect(new Set(every.map((event) => event._tag))).toEqual(new Set(AgentEvent.tags))
  })

  it.effect("every event encodes to one JSON line with its schema and decodes back equal", () =>
    Effect.gen(function*() {
      for (const event of every) {
        const line = yield* AgentEvent.toJson(event)
        expect(line).not.toContain("\n")
        expect(JSON.parse(line)._tag).toBe(event._tag)
        expect(yield* AgentEvent.fromJson(line)).toStrictEqual(event)
      }
      const lines = yield* Stream.runCollect(AgentEvent.jsonLines(Stream.fromIterable(every.slice(0, 2))))
      expect(Chunk.toReadonlyArray(lines)).toEqual([
        "{\"taskId\":\"t\",\"_tag\":\"TaskQueued\"}\n",
        "{\"taskId\":\"t\",\"_tag\":\"TaskStarted\"}\n"
      ])
    }))

  it.effect("a line that is not an event fails to decode with a ParseError", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip(AgentEvent.fromJson("{\"_tag\":\"TaskStarted\"}"))
      expect(failed._tag).toBe("ParseError")
    }))
})
