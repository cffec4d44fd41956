/**
 * Timeout: a per-attempt timeout inside a Bulkhead permit, and the two stream timeouts
 * (time to first chunk, longest gap between chunks).
 *
 *   npx tsx examples/timeout.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect, Either, Stream } from "effect"
import { AiModel, Bulkhead, EmbeddedModel, Timeout } from "../src/index.js"

const program = Effect.gen(function*() {
  // Each section prints times from its own start.
  let start = 0
  const section = (title: string) =>
    Effect.zipRight(Console.log(title), Effect.map(Clock.currentTimeMillis, (t) => void (start = t)))
  const log = (line: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (t) => Console.log(`  ${String(t - start).padStart(3)} ms  ${line}`))

  yield* section("One permit. A hangs; its 50 ms timeout fires, but closing its connection takes 100 ms:")
  const bulkhead = yield* Bulkhead.make({ permits: 1 })
  const within50ms = Timeout.attempt({ duration: "50 millis", model: "gpt" })
  // A call that never answers, and whose teardown (say, closing a socket) takes 100 ms.
  const hung = Effect.never.pipe(
    Effect.onInterrupt(() => Effect.zipRight(Effect.sleep("100 millis"), log("A's call has really stopped")))
  )
  // The timeout sits inside the permit: the permit is held until the interrupted call has ended,
  // so at most `permits` calls are ever on the wire (opossum and p-queue free it at 50 ms).
  const a = bulkhead.withPermit(Effect.either(within50ms(hung))).pipe(
    Effect.tap((r) => log(`A fails with ${Either.isLeft(r) ? r.left._tag : "nothing"}, only now the permit is freed`))
  )
  const b = bulkhead.withPermit(log("B gets the permit"))
  yield* Effect.all([a, Effect.zipRight(Effect.sleep("10 millis"), b)], { concurrency: "unbounded" })

  yield* section("Streams: the first chunk must come within 100 ms (this model needs ~300 ms):")
  const slowStart = yield* EmbeddedModel.make({ name: "slow", timeToFirstToken: "300 millis", jitter: 0 })
  const request = new AiModel.CompletionRequest({ prompt: "Summarise: timeouts bound waiting.", maxTokens: 16 })
  const firstChunk = yield* slowStart.stream(request).pipe(
    Timeout.firstChunk({ duration: "100 millis", model: slowStart.name }),
    Stream.runDrain,
    Effect.either
  )
  yield* log(Either.isLeft(firstChunk) ? `${firstChunk.left._tag}: ${firstChunk.left.message}` : "streamed")

  yield* section("...and no gap between chunks may exceed 80 ms (this stream stalls after two):")
  const stalling = Stream.mapEffect(
    Stream.fromIterable([["The", 20], [" answer", 20], [" is", 500]] as const),
    ([delta, ms]) => Effect.as(Effect.sleep(ms), new AiModel.CompletionChunk({ delta }))
  )
  const gaps = yield* stalling.pipe(
    Timeout.betweenChunks({ duration: "80 millis", model: "gpt" }),
    Stream.runForEach((chunk) => log(`chunk ${JSON.stringify(chunk.delta)}`)),
    Effect.either
  )
  yield* log(Either.isLeft(gaps) ? `${gaps.left._tag}: ${gaps.left.message}` : "streamed")
})

program.pipe(NodeRuntime.runMain)
