/**
 * StreamingAnswer: one streamed answer through a first-chunk timeout, retry and fallback before
 * the first chunk, and — opt-in — continuation after the stream breaks mid-answer, so the reader
 * sees one uninterrupted answer with no repeated words.
 *
 *   npx tsx examples/streaming-answer.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Stream } from "effect"
import { AiModel, EmbeddedModel, Retry, StreamingAnswer } from "../src/index.js"

const prompt = "Streaming shows an answer while it is written. A stream can break in the middle of an answer. " +
  "Most clients then show half an answer as if it were whole. Continuation asks the model for the rest."
const request = new AiModel.CompletionRequest({ prompt, maxTokens: 120 })

/** Streams the answer to stdout as it arrives; then how it ended. */
const show = <E extends { readonly message: string }>(answer: Stream.Stream<AiModel.CompletionChunk, E>) =>
  answer.pipe(
    Stream.runForEach((chunk) => Effect.sync(() => void process.stdout.write(chunk.delta))),
    Effect.matchEffect({
      onFailure: (error) => Console.log(`\n  -> failed: ${error.message}`),
      onSuccess: () => Console.log("\n  -> complete")
    })
  )

const program = Effect.gen(function*() {
  const whole = (yield* (yield* EmbeddedModel.make({ seed: 1, timeToFirstToken: 0, perToken: 0 })).generate(request)).text
  // A model whose streams break mid-answer (a connection reset): with seed 7 its first two streams break.
  const flaky = yield* EmbeddedModel.make({
    name: "flaky",
    seed: 7,
    timeToFirstToken: "20 millis",
    perToken: "1 millis",
    midStreamFailureRate: 0.6
  })

  console.log("1. Without continue, a mid-stream failure ends the answer (and is never retried: words were shown):")
  yield* show(StreamingAnswer.make({ betweenChunks: "1 second" })([StreamingAnswer.fromModel(flaky, request)]))

  console.log("\n2. With continue, the model is asked for what follows the text delivered:")
  let joined = ""
  const continuing = StreamingAnswer.make({
    betweenChunks: "1 second",
    continue: { maxContinuations: 5 },
    onContinued: ({ deliveredChars, error }) =>
      Effect.sync(() => void process.stdout.write(`⟨${error._tag} at ${deliveredChars} chars, continued⟩`))
  })
  yield* show(
    continuing([StreamingAnswer.fromModel(flaky, request)]).pipe(Stream.tap((chunk) => Effect.sync(() => void (joined += chunk.delta))))
  )
  console.log(`  the joined text equals the uninterrupted answer: ${joined === whole}`)

  console.log("\n3. Before the first chunk, a slow start times out, is retried, then falls back to another model:")
  const slow = yield* EmbeddedModel.make({ name: "slow", seed: 1, timeToFirstToken: "500 millis", jitter: 0 })
  const backup = yield* EmbeddedModel.make({ name: "backup", seed: 1, timeToFirstToken: "10 millis", perToken: 0 })
  const retry = Retry.make({ base: "10 millis", jitter: "none", maxAttempts: 2 })
  const failover = StreamingAnswer.make({
    firstChunk: "50 millis",
    policy: (start) => retry.apply(start),
    onStarted: ({ failures, source }) =>
      Console.log(`  [answered by ${source}; before it: ${failures.map((f) => `${f.tier} (${f.error._tag})`).join(", ") || "none"}]`)
  })
  yield* show(failover([StreamingAnswer.fromModel(slow, request), StreamingAnswer.fromModel(backup, request)]))
})

program.pipe(NodeRuntime.runMain)
