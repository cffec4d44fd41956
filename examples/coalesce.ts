/**
 * Coalesce: identical requests in flight share one model call. Every waiter gets the answer and
 * learns whether it led the call or joined it; when every waiter has gone, the call is
 * interrupted (the seed's `RequestCoalescer` let it run on).
 *
 *   npx tsx examples/coalesce.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Fiber } from "effect"
import { Coalesce } from "../src/index.js"

const program = Effect.gen(function*() {
  let modelCalls = 0
  let cancelled = 0
  // A model that takes 50 ms to answer and says when a call was cancelled.
  const callModel = (prompt: string) =>
    Effect.suspend(() => {
      modelCalls++
      return Effect.as(Effect.sleep("50 millis"), `answer to "${prompt}"`)
    }).pipe(Effect.onInterrupt(() => Effect.sync(() => cancelled++)))

  const coalesce = yield* Coalesce.make<string>()
  const ask = (prompt: string) => coalesce.share(prompt, callModel(prompt))

  // 1,000 tasks at once, five distinct prompts among them.
  const prompts = Array.from({ length: 1000 }, (_, i) => `prompt ${i % 5}`)
  const shared = yield* Effect.forEach(prompts, ask, { concurrency: "unbounded" })
  const led = shared.filter((s) => s.role === "led").length
  yield* Console.log(`1,000 tasks, 5 distinct prompts: ${modelCalls} model calls; ${led} tasks led a call, ${1000 - led} joined one`)
  yield* Console.log(`  task 0: ${shared[0]!.role}, its call served ${shared[0]!.callers} callers`)
  yield* Console.log(`  task 5: ${shared[5]!.role}, its call served ${shared[5]!.callers} callers`)

  // A waiter that leaves early (even the one that started the call) does not cancel the others.
  modelCalls = 0
  const first = yield* Effect.fork(coalesce.apply("long prompt", callModel("long prompt")))
  const second = yield* Effect.fork(coalesce.apply("long prompt", callModel("long prompt")))
  yield* Effect.sleep("10 millis")
  yield* Fiber.interrupt(first)
  const answer = yield* Fiber.join(second)
  yield* Console.log(`the first caller left after 10 ms; the second still got: ${answer} (${modelCalls} call, ${cancelled} cancelled)`)

  // When the last waiter leaves, the call is cancelled: nobody pays for an answer nobody reads.
  const a = yield* Effect.fork(coalesce.apply("abandoned", callModel("abandoned")))
  const b = yield* Effect.fork(coalesce.apply("abandoned", callModel("abandoned")))
  yield* Effect.sleep("10 millis")
  yield* Fiber.interrupt(a)
  yield* Console.log(`one of two waiters left: cancelled calls ${cancelled}`)
  yield* Fiber.interrupt(b)
  yield* Console.log(`the last waiter left: cancelled calls ${cancelled}; calls in flight ${yield* coalesce.inFlight}`)
})

program.pipe(NodeRuntime.runMain)
