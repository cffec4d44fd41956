/**
 * AiStream: a concurrent, order-keeping transform over a stream of prompts (the seed's
 * AIProcessingStream awaited one at a time), token-bucket shaping (its RateLimitedStream measured
 * from the last chunk only), `for await` over the results, and a Node Readable → transform →
 * Writable pipeline that fails with the first error and releases everything.
 *
 *   npx tsx examples/ai-stream.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect, Either, Stream } from "effect"
import { Readable, Writable } from "node:stream"
import { AiModel, AiStream, EmbeddedModel } from "../src/index.js"

const prompts = [
  "Retries need jitter. Without it clients retry in lockstep.",
  "A circuit breaker stops calls to a failing provider.",
  "Bulkheads bound how many calls run at once.",
  "Timeouts bound every attempt.",
  "Hedging starts a second call when the first is slow.",
  "Fallbacks answer when the primary model cannot.",
  "Budgets stop retry storms.",
  "Streams deliver tokens as they come."
]

const elapsed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const value = yield* effect
    return [value, (yield* Clock.currentTimeMillis) - start] as const
  })

const program = Effect.gen(function*() {
  const model = yield* EmbeddedModel.make({ seed: 1, timeToFirstToken: "60 millis", perToken: 0, jitter: 0 })
  const summarise = (prompt: string) =>
    Effect.map(model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 12 })), (c) => c.text.split("\n")[0]!)

  console.log("1. Eight model calls of 60 ms: one at a time (the seed) vs four at once, in input order:")
  const [, sequential] = yield* elapsed(Stream.runDrain(Stream.fromIterable(prompts).pipe(AiStream.transform(summarise, { concurrency: 1 }))))
  const [results, concurrent] = yield* elapsed(
    Stream.runCollect(Stream.fromIterable(prompts).pipe(AiStream.transform(summarise, { concurrency: 4 })))
  )
  console.log(`   one at a time: ${sequential} ms; four at once: ${concurrent} ms; first result: ${[...results][0]}`)

  console.log("2. A token bucket of 2 per 100 ms with a burst of 2: six items at once, then after a pause:")
  const start = yield* Clock.currentTimeMillis
  const stamp = (label: string) => Effect.flatMap(Clock.currentTimeMillis, (t) => Console.log(`   ${label} at ${t - start} ms`))
  const items = Stream.concat(
    Stream.make("a1", "a2", "a3", "a4", "a5", "a6"),
    Stream.concat(Stream.drain(Stream.fromEffect(Effect.sleep("400 millis"))), Stream.make("b1", "b2", "b3", "b4", "b5"))
  )
  yield* items.pipe(
    AiStream.shape({ rate: { units: 2, per: "100 millis", burst: 2 } }),
    Stream.runForEach(stamp)
  )

  console.log("3. `for await` over the results, as the seed's async iteration did:")
  const iterable = yield* AiStream.toAsyncIterable(
    Stream.fromIterable(prompts.slice(0, 3)).pipe(AiStream.transform(summarise, { concurrency: 3 }))
  )
  yield* Effect.promise(async () => {
    for await (const summary of iterable) console.log(`   ${summary}`)
  })

  console.log("4. Node Readable -> transform -> Node Writable; a failing item fails the pipeline, the Writable is destroyed:")
  const written: Array<string> = []
  const output = () =>
    new Writable({ objectMode: true, write: (line: string, _encoding, done) => (written.push(line), done()) })
  yield* AiStream.pipeline(
    AiStream.fromReadable<string>(() => Readable.from(prompts.slice(0, 4))),
    AiStream.transform(summarise, { concurrency: 2 }),
    AiStream.toWritable<string>(output)
  )
  console.log(`   wrote ${written.length} summaries`)
  const failing = output()
  const result = yield* Effect.either(AiStream.pipeline(
    AiStream.fromReadable<string>(() => Readable.from([...prompts.slice(0, 2), "   ", prompts[3]!])),
    AiStream.transform(summarise, { concurrency: 2 }),
    AiStream.toWritable<string>(() => failing)
  ))
  console.log(`   ${Either.isLeft(result) ? `failed: ${result.left.message}` : "succeeded"}; writable destroyed: ${failing.destroyed}`)
})

program.pipe(NodeRuntime.runMain)
