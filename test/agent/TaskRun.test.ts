import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, TestClock } from "effect"
import * as TaskRun from "../../src/agent/TaskRun.js"
import * as Throttling from "../../src/agent/Throttling.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as CircuitBreaker from "../../src/policy/CircuitBreaker.js"
import { TaskWindow } from "../../src/internal/taskWindow.js"
import { parts, task } from "./parts.js"

describe("TaskRun", () => {
  it.scoped("a deadline's error names what the task waited for, the calls it made and the last error it met", () =>
    Effect.gen(function*() {
      const { runOf } = yield* parts({ deadline: "10 seconds" })
      const run = yield* runOf(task("t"))
      run.attempts = 2
      run.lastError = new AiModel.Overloaded({ model: "m" })
      expect(run.deadlineExceeded("an answer from m")).toMatchObject({
        _tag: "DeadlineExceeded",
        waitingFor: "an answer from m",
        attempts: 2,
        deadline: Duration.seconds(10),
        lastError: { _tag: "Overloaded" }
      })
    }))

  it.scoped("waiting on an open circuit never goes past the deadline", () =>
    Effect.gen(function*() {
      const { runOf } = yield* parts({ deadline: "1 second" })
      const run = yield* runOf(task("t"))
      const refused = new CircuitBreaker.CircuitOpen({ breaker: "m", retryAfter: Duration.minutes(1) })
      const fiber = yield* Effect.fork(Effect.flip(run.waitOnCircuit(Effect.never, refused)))
      yield* TestClock.adjust(999)
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust(1)
      expect(yield* Fiber.join(fiber)).toMatchObject({ _tag: "DeadlineExceeded", waitingFor: "the circuit of m: circuit open, retry after 1m" })
    }))

  it.scoped("a Retry-After wait keeps the task's place in its window; any other backoff frees it", () =>
    Effect.gen(function*() {
      const { context } = yield* parts()
      const window = new TaskWindow(1)
      const run = TaskRun.make(task("t"), context, 0, window)
      const placeWhile = (error: AiModel.ModelError) =>
        window.admit(Effect.gen(function*() {
          const fiber = yield* Effect.fork(run.wait(Duration.seconds(1), error))
          yield* Effect.yieldNow()
          const awake = window.awakeCount
          yield* TestClock.adjust("1 second")
          yield* Fiber.join(fiber)
          return awake
        }))
      expect(yield* placeWhile(new AiModel.RateLimited({ model: "m", limit: "requests" }))).toBe(1)
      expect(yield* placeWhile(new AiModel.Overloaded({ model: "m" }))).toBe(0)
    }))

  it.scoped("issue 17.9: an isolated 429's Retry-After wait frees the task's place; while the model is throttling the batch it keeps it", () =>
    Effect.gen(function*() {
      const { bus } = yield* parts()
      const throttling = Throttling.make()
      const context = TaskRun.context(bus, "1 minute", undefined, throttling)
      const window = new TaskWindow(1)
      const run = TaskRun.make(task("t"), context, 0, window)
      const rateLimited = new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.seconds(1) })
      const placeWhile = window.admit(Effect.gen(function*() {
        const fiber = yield* Effect.fork(run.wait(Duration.seconds(1), rateLimited))
        yield* Effect.yieldNow()
        const awake = window.awakeCount
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(fiber)
        return awake
      }))
      // nine attempts answered on the wire beside this one: its 429 is the odd refusal
      for (let i = 0; i < 10; i++) throttling.attempted("m", 0)
      expect(yield* placeWhile).toBe(0)
      // most of the model's recent attempts were refused: the provider throttles the batch
      for (let i = 0; i < 5; i++) throttling.refused("m", 1_000)
      expect(yield* placeWhile).toBe(1)
    }))
})
