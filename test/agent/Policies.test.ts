import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { parts } from "./parts.js"

describe("Policies", () => {
  it.scoped("one token budget and one breaker per model name, whoever asks; the flow view lists the budgets", () =>
    Effect.gen(function*() {
      const { policies } = yield* parts({ concurrency: 3, tokenBudget: { limits: { tokens: 1_000 } } })
      const budget = yield* policies.budgetFor("m")
      expect(yield* policies.budgetFor("m")).toBe(budget)
      expect(yield* policies.budgetFor("other")).not.toBe(budget)
      expect(yield* policies.breakerFor("m")).toBe(yield* policies.breakerFor("m"))
      const flow = yield* policies.flow
      expect(flow).toMatchObject({ limit: 3, active: 0, queued: 0 })
      expect(Object.keys(flow.budgets).sort()).toStrictEqual(["m", "other"])
    }))

  it.scoped("off means absent: no budget, no breaker, no retry, no hedge", () =>
    Effect.gen(function*() {
      const { policies } = yield* parts({ tokenBudget: false, breaker: false, retry: false })
      expect(yield* policies.budgetFor("m")).toBeUndefined()
      expect(yield* policies.breakerFor("m")).toBeUndefined()
      expect(policies.retryFor(true)).toBeUndefined()
      expect(yield* policies.hedgeFor()).toBeUndefined()
      expect(policies.awake).toBe(8)
    }))

  it.scoped("concurrency \"adaptive\": twice the limit in force awake, within maxTasks", () =>
    Effect.gen(function*() {
      const { policies } = yield* parts({ concurrency: "adaptive", adaptive: { initial: 5 }, maxTasks: 8 })
      expect(typeof policies.awake).toBe("function")
      if (typeof policies.awake === "number") return
      expect(policies.awake()).toBe(8)
      expect(policies.maxTasks).toBe(8)
      expect((yield* policies.flow).limit).toBe(5)
    }))
})
