/**
 * Retry: a classified, jittered, capped backoff that honours Retry-After and a shared budget.
 *
 *   npx tsx examples/retry.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Duration, Effect, Either, Random } from "effect"
import { AiModel, Budget, Retry } from "../src/index.js"

/** A fake provider call: fails with the scripted errors in turn, then answers. */
const scripted = (errors: ReadonlyArray<AiModel.ModelError>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    let attempt = 0
    return Effect.gen(function*() {
      const error = errors[attempt++]
      const at = (yield* Clock.currentTimeMillis) - start
      yield* Console.log(`  attempt ${attempt} at ${String(at).padStart(3)} ms -> ${error?._tag ?? "answer"}`)
      return error === undefined ? "the answer" : yield* Effect.fail(error)
    })
  })

const outcome = <E extends { _tag: string; message: string }>(call: Effect.Effect<string, E>) =>
  Effect.flatMap(Effect.either(call), (result) =>
    Console.log(Either.isRight(result) ? `  => ${result.right}` : `  => failed: ${result.left.message}`))

const overloaded = new AiModel.Overloaded({ model: "gpt" })

const program = Effect.gen(function*() {
  // Exponential from 40 ms, capped at 100 ms, then full jitter: each wait is drawn from [0, capped].
  const policy = Retry.make<AiModel.ModelError>({
    base: "40 millis",
    cap: "100 millis",
    maxAttempts: 5,
    jitter: "full",
    onRetry: ({ attempt, delay, error }) => {
      const exponential = 40 * 2 ** (attempt - 2)
      const drawn = exponential > 100 ? `0..100 ms, ${exponential} capped` : `0..${exponential} ms`
      return Console.log(`    waiting ${Duration.format(delay)} ` +
        (error._tag === "RateLimited" ? "(the Retry-After)" : `(drawn from ${drawn})`))
    },
    onGiveUp: ({ attempts, reason }) => Console.log(`    gave up after ${attempts} attempt(s): ${reason}`)
  })

  yield* Console.log("Transient errors are retried; a 429's Retry-After (300 ms) is a floor on the wait:")
  const rateLimited = new AiModel.RateLimited({ model: "gpt", limit: "requests", retryAfter: Duration.millis(300) })
  yield* outcome(policy.apply(yield* scripted([overloaded, overloaded, overloaded, rateLimited])))

  yield* Console.log("A 400 is the caller's fault: sending it again cannot help, so it is not retried:")
  const tooLong = new AiModel.InvalidRequest({ model: "gpt", reason: "prompt too long" })
  yield* outcome(policy.apply(yield* scripted([tooLong])))

  yield* Console.log("A Retry-After above retryAfterMax (1 minute by default) fails at once, for a fallback:")
  const hourLong = new AiModel.RateLimited({ model: "gpt", limit: "tokens", retryAfter: Duration.hours(1) })
  yield* outcome(policy.apply(yield* scripted([hourLong])))

  // One budget shared by every call: here 1 extra attempt per second, whatever the traffic.
  // In an outage, retries stop at the budget instead of multiplying the load.
  yield* Console.log("Two calls share a budget of one retry per second:")
  const budget = yield* Budget.make({ ratio: 0, minPerSecond: 1, window: "1 second" })
  const budgeted = Retry.make<AiModel.ModelError>({
    base: "20 millis",
    budget,
    onGiveUp: ({ attempts, reason }) => Console.log(`    gave up after ${attempts} attempt(s): ${reason}`)
  })
  const down = Array.from({ length: 4 }, () => overloaded)
  yield* outcome(budgeted.apply(yield* scripted(down)))
  yield* outcome(budgeted.apply(yield* scripted(down)))
})

// Jitter draws from Effect's Random: a fixed seed makes every wait above reproducible.
program.pipe(Effect.withRandom(Random.make(42)), NodeRuntime.runMain)
