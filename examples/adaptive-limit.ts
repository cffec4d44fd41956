/**
 * AdaptiveLimit: concurrency that finds the provider's knee by itself. The embedded provider
 * serves 6 calls at full speed (beyond that, each call is slower in proportion to the load, and
 * beyond 12 it answers Overloaded); 24 callers send one call after another through the limit,
 * which is never told the capacity. At 8 s the capacity halves. Watch the limit follow it.
 *
 * It runs in virtual time (Effect's TestClock), the way you would test it.
 *
 *   npx tsx examples/adaptive-limit.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { Clock, Console, Effect, Exit, Fiber, Ref, Stream, TestClock, TestContext } from "effect"
import { AdaptiveLimit, AiModel, EmbeddedModel } from "../src/index.js"

const request = new AiModel.CompletionRequest({ prompt: "Adaptive concurrency grows while latency stays flat.", maxTokens: 32 })

const program = Effect.gen(function*() {
  const capacity = yield* Ref.make(6)
  const model = yield* EmbeddedModel.make({ seed: 1, capacity, jitter: 0.2 })
  const limit = yield* AdaptiveLimit.make() // starts at 4, between 1 and 1000

  // every change of the limit, with when it happened
  const changes: Array<string> = []
  yield* Effect.fork(Stream.runForEach(limit.changes, (n) =>
    Effect.map(Clock.currentTimeMillis, (t) => changes.push(`${(t / 1000).toFixed(1)}s:${n}`))))

  let answered = 0
  let overloaded = 0
  const caller = Effect.gen(function*() {
    while ((yield* Clock.currentTimeMillis) < 16_000) {
      const exit = yield* Effect.exit(limit.withPermit(model.generate(request)))
      if (Exit.isSuccess(exit)) answered++
      else overloaded++
    }
  })
  const callers = yield* Effect.fork(Effect.forEach(Array.from({ length: 24 }), () => caller, { concurrency: "unbounded" }))
  yield* TestClock.adjust("8 seconds")
  yield* Console.log(`capacity 6 for 8 s: limit ${yield* limit.limit}`)
  yield* Ref.set(capacity, 3)
  yield* TestClock.adjust("8 seconds")
  yield* Console.log(`capacity 3 for 8 s more: limit ${yield* limit.limit}`)
  yield* TestClock.adjust("1 minute")
  yield* Fiber.join(callers)
  yield* Console.log(`limit changes (time:limit): ${changes.join(" ")}`)
  yield* Console.log(`${answered} answered, ${overloaded} Overloaded`)
})

Effect.runPromise(program.pipe(Effect.provide(TestContext.TestContext))).catch((error) => {
  console.error(error)
  process.exit(1)
})
