import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, TestClock } from "effect"
import * as FallbackChain from "../../src/agent/FallbackChain.js"
import * as AiModel from "../../src/model/AiModel.js"
import { model, parts, request, task } from "./parts.js"

const down = (name: string) => model(name, () => new AiModel.Unavailable({ model: name, reason: "down" }))

describe("FallbackChain", () => {
  it.scoped("one model and no static answer is no chain: the answer is the primary's own completion", () =>
    Effect.gen(function*() {
      const { policies, runOf } = yield* parts()
      const chain = yield* FallbackChain.make(policies, model("m").service, {})
      const fiber = yield* Effect.fork(chain.answer(request("p"), yield* runOf(task("t"))))
      yield* TestClock.adjust(10)
      const answer = yield* Fiber.join(fiber)
      expect(answer).toBeInstanceOf(AiModel.Completion)
      expect(chain.models.map((m) => m.name)).toStrictEqual(["m"])
    }))

  it.scoped("every model down: the static answer answers, saying which tiers failed and why", () =>
    Effect.gen(function*() {
      const { policies, runOf } = yield* parts({ retry: false, breaker: false })
      const chain = yield* FallbackChain.make(policies, down("a").service, {
        retry: false,
        fallback: { models: [down("b").service], staticAnswer: (t) => `sorry, ${t.id}` }
      })
      const fiber = yield* Effect.fork(chain.answer(request("p"), yield* runOf(task("t"))))
      yield* TestClock.adjust(100)
      const answer = yield* Fiber.join(fiber)
      expect(answer).not.toBeInstanceOf(AiModel.Completion)
      if (answer instanceof AiModel.Completion) return
      expect(answer).toMatchObject({ tier: "static", degraded: true, value: { text: "sorry, t", model: "static" } })
      expect(answer.failures.map(({ error, tier }) => [tier, error._tag])).toStrictEqual([["a", "Unavailable"], ["b", "Unavailable"]])
    }))

  it.scoped("retryAfterAboveMax: \"fail\" keeps a Retry-After above retryAfterMax from falling through; below it, it falls", () =>
    Effect.gen(function*() {
      const { policies } = yield* parts()
      const chain = yield* FallbackChain.make(policies, model("a").service, {
        retry: { retryAfterMax: "1 minute" },
        fallback: { models: [model("b").service], retryAfterAboveMax: "fail" }
      })
      const limited = (after: Duration.DurationInput) =>
        new AiModel.RateLimited({ model: "a", limit: "requests", retryAfter: Duration.decode(after) })
      expect(chain.fallThrough(limited("1 hour"))).toBe(false)
      expect(chain.fallThrough(limited("5 seconds"))).toBe(true)
      expect(chain.fallThrough(new AiModel.InvalidRequest({ model: "a", reason: "too long" }))).toBe(false)
    }))
})
