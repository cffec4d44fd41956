/**
 * TokenBudget: use a provider's whole token limit and never more. The embedded provider here
 * allows 2,000 tokens a minute; 40 tasks need about 1.5 times that. Without a budget, the calls
 * beyond what the provider has left are refused (429); with a budget that was never told the
 * limit, the first answer's report teaches it, and every later call waits until its tokens fit.
 *
 * It runs in virtual time (Effect's TestClock), the way you would test it: the minute and more
 * the tasks take passes at once.
 *
 *   npx tsx examples/token-budget.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { Clock, Console, Effect, Either, Fiber, TestClock, TestContext } from "effect"
import { AiModel, Bulkhead, EmbeddedModel, TokenBudget } from "../src/index.js"

const requests = Array.from({ length: 40 }, (_, i) =>
  new AiModel.CompletionRequest({
    prompt: `Task ${i}. A token budget refills continuously. It lets a call through when its whole cost fits.`,
    maxTokens: 60
  }))

const run = (withBudget: boolean) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const model = yield* EmbeddedModel.make({ seed: 1, tokensPerMinute: 2000, timeToFirstToken: "200 millis", perToken: "5 millis" })
    const bulkhead = yield* Bulkhead.make({ permits: 8 })
    const budget = yield* TokenBudget.make() // no limits given: it learns them
    const fiber = yield* Effect.fork(Effect.zip(
      Effect.forEach(requests, (request) => {
        const call = bulkhead.withPermit(model.generate(request))
        return Effect.either(withBudget ? budget.meter(request)(call) : call)
      }, { concurrency: "unbounded" }),
      Clock.currentTimeMillis // when the last one finished
    ))
    yield* TestClock.adjust("10 seconds")
    const learned = (yield* budget.state).dimensions.tokens
    yield* TestClock.adjust("1 hour")
    const [results, finished] = yield* Fiber.join(fiber)
    const refused = results.filter((r) => Either.isLeft(r) && r.left._tag === "RateLimited").length
    return { answered: results.filter(Either.isRight).length, refused, learned, seconds: (finished - start) / 1000 }
  })

const program = Effect.gen(function*() {
  const without = yield* run(false)
  yield* Console.log(`without a budget: ${without.answered} answered, ${without.refused} refused with 429`)
  const withBudget = yield* run(true)
  yield* Console.log(
    `with a TokenBudget that was never told the limit: ${withBudget.answered} answered, ${withBudget.refused} refused, ` +
      `the last at ${withBudget.seconds.toFixed(1)} s (virtual)`
  )
  yield* Console.log(
    `  what it learned from the first answers: ${withBudget.learned?.capacity} tokens, ` +
      `refilled at ${withBudget.learned?.perSecond.toFixed(1)} a second`
  )
  // A call that can never fit fails at once instead of waiting forever.
  const budget = yield* TokenBudget.make({ limits: { tokens: 2000 } })
  const huge = yield* Effect.flip(budget.reserve({ tokens: 5000 }))
  yield* Console.log(`a cost above the limit: ${huge.message}`)
})

Effect.runPromise(program.pipe(Effect.provide(TestContext.TestContext))).catch((error) => {
  console.error(error)
  process.exit(1)
})
