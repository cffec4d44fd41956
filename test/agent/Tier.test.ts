import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Fiber, TestClock } from "effect"
import * as Tier from "../../src/agent/Tier.js"
import * as AiModel from "../../src/model/AiModel.js"
import { model, parts, request, task } from "./parts.js"

describe("Tier", () => {
  it.scoped("a permit is held only while a request is on the wire: a task in backoff lets the next one call", () =>
    Effect.gen(function*() {
      // concurrency 1; "a" fails once and backs off; "b" must be answered during that backoff
      const { seen, service } = model("m", (n) => n === 0 ? new AiModel.Overloaded({ model: "m" }) : undefined, 10)
      const { policies, runOf } = yield* parts({ concurrency: 1, breaker: false, tokenBudget: false })
      const tier = yield* Tier.make(policies, service, true)
      const ended: Array<string> = []
      const ask = (id: string) =>
        Effect.flatMap(runOf(task(id)), (run) =>
          Effect.zipRight(tier(request(id), run), Effect.sync(() => ended.push(id))))
      const a = yield* Effect.fork(ask("a"))
      yield* TestClock.adjust(10) // a's first call fails; a sleeps in its backoff
      const b = yield* Effect.fork(ask("b"))
      yield* TestClock.adjust(15)
      expect(ended).toStrictEqual(["b"])
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(a)
      yield* Fiber.join(b)
      expect(ended).toStrictEqual(["b", "a"])
      expect(seen).toMatchObject({ calls: 3, maxOnWire: 1 })
    }))

  it.scoped("the task's run counts the calls that reached the model and keeps the last error", () =>
    Effect.gen(function*() {
      const { service } = model("m", (n) => n < 2 ? new AiModel.Unavailable({ model: "m", reason: "down" }) : undefined)
      const { policies, runOf } = yield* parts({ breaker: false, retryBudget: false })
      const tier = yield* Tier.make(policies, service, true)
      const run = yield* runOf(task("t"))
      const fiber = yield* Effect.fork(tier(request("p"), run))
      yield* TestClock.adjust("1 minute")
      const completion = yield* Fiber.join(fiber)
      expect(completion.text).toBe("m: p")
      expect(run.attempts).toBe(3)
      expect(run.lastError?._tag).toBe("Unavailable")
    }))

  it.scoped("the time limit is what is left of the task's deadline when that is less than the timeout", () =>
    Effect.gen(function*() {
      const { service } = model("m", () => undefined, 1_000)
      const { policies, runOf } = yield* parts({ retry: false, deadline: "100 millis", timeout: "30 seconds" })
      const tier = yield* Tier.make(policies, service, true)
      const run = yield* runOf(task("t"))
      const fiber = yield* Effect.fork(Effect.flip(tier(request("p"), run)))
      yield* TestClock.adjust("1 second")
      const error = yield* Fiber.join(fiber)
      expect(error).toMatchObject({ _tag: "DeadlineExceeded", waitingFor: "an answer from m", attempts: 1 })
      expect(yield* Clock.currentTimeMillis).toBe(1_000)
    }))
})
