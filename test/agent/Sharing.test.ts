import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, TestClock } from "effect"
import * as FallbackChain from "../../src/agent/FallbackChain.js"
import * as Sharing from "../../src/agent/Sharing.js"
import { model, parts, request, task } from "./parts.js"

describe("Sharing", () => {
  it.scoped("neither coalesce nor memo: no sharing step at all", () =>
    Effect.gen(function*() {
      const { bus } = yield* parts()
      expect(yield* Sharing.make({}, bus)).toBeUndefined()
      expect(yield* Sharing.make({ coalesce: false }, bus)).toBeUndefined()
    }))

  it.scoped("memo: an identical request asked again is answered with no call, attempts 0, memoized", () =>
    Effect.gen(function*() {
      const { seen, service } = model("m")
      const { bus, policies, runOf } = yield* parts()
      const chain = yield* FallbackChain.make(policies, service, {})
      const share = (yield* Sharing.make({ memo: { timeToLive: "1 minute" } }, bus))!
      const ask = (id: string) =>
        Effect.flatMap(runOf(task(id)), (run) => share(request("same"), run, chain.answer(request("same"), run)))
      const first = yield* Effect.fork(ask("a"))
      yield* TestClock.adjust(10)
      expect(yield* Fiber.join(first)).toMatchObject({ attempts: 1 })
      const again = yield* ask("b")
      expect(again).toMatchObject({ attempts: 0, memoized: true })
      expect(Exit.isSuccess(again.exit)).toBe(true)
      expect(seen.calls).toBe(1)
    }))

  it.scoped("coalesce: identical requests in flight share one call; each says its role and how many it served", () =>
    Effect.gen(function*() {
      const { seen, service } = model("m")
      const { bus, policies, runOf } = yield* parts()
      const chain = yield* FallbackChain.make(policies, service, {})
      const share = (yield* Sharing.make({ coalesce: true }, bus))!
      const ask = (id: string) =>
        Effect.flatMap(runOf(task(id)), (run) => share(request("same"), run, chain.answer(request("same"), run)))
      const fibers = yield* Effect.forEach(["a", "b", "c"], (id) => Effect.fork(ask(id)))
      yield* TestClock.adjust(10)
      const shared = yield* Effect.forEach(fibers, Fiber.join)
      expect(seen.calls).toBe(1)
      expect(shared.map((s) => s.coalesced)).toStrictEqual([
        { role: "led", callers: 3 },
        { role: "joined", callers: 3 },
        { role: "joined", callers: 3 }
      ])
    }))
})
