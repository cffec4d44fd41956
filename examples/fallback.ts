/**
 * Fallback: two AiModel layers named as tiers, then a static answer. Every answer says which
 * tier gave it, whether it is degraded, and why each earlier tier failed; nothing is disguised.
 *
 *   npx tsx examples/fallback.ts
 *
 * In your own code, import from "wiz-effect" instead of "../src/index.js".
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Either } from "effect"
import { AiModel, EmbeddedModel, Fallback } from "../src/index.js"

// The primary is down (every call Overloaded); the backup answers, but only once per minute.
const primary = EmbeddedModel.layer({ name: "big-model", failureRate: 1, faults: { overloaded: 1 } })
const backup = EmbeddedModel.layer({ name: "small-model", requestsPerMinute: 1, timeToFirstToken: "20 millis" })

/** The program each tier runs, with that tier's model provided. */
const summarise = (prompt: string) =>
  Effect.flatMap(AiModel.AiModel, (model) => model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 40 })))

const program = Effect.gen(function*() {
  // Each layer is built once, here, in this scope: a broken tier shows up at start.
  const models = yield* Fallback.models([
    { name: "primary", layer: primary },
    { name: "backup", layer: backup }
  ])
  const ask = (prompt: string) =>
    Fallback.run([
      ...Fallback.modelTiers(models, Effect.map(summarise(prompt), (completion) => completion.text)),
      Fallback.fixed("static", "(busy: please try again in a minute)") // cannot fail
    ])

  const prompts = [
    "Summarise: The primary model is down. A fallback tier answers instead. The answer says so.",
    "Summarise: Now the backup has spent its one request per minute.",
    "  " // blank: an InvalidRequest
  ]
  for (const prompt of prompts) {
    yield* Console.log(`Prompt ${JSON.stringify(prompt)}`)
    const result = yield* Effect.either(ask(prompt))
    if (Either.isLeft(result)) {
      // A 400 (here, a blank prompt) does not fall through: the next model would refuse it too.
      yield* Console.log(`  failed at once: ${result.left._tag}: ${result.left.message}`)
      continue
    }
    const answered = result.right
    yield* Console.log(`  answered by tier ${answered.index} "${answered.tier}" (degraded: ${answered.degraded})`)
    yield* Console.log(`  text: ${JSON.stringify(answered.value)}`)
    for (const failure of answered.failures) {
      yield* Console.log(`  before it, "${failure.tier}" failed: ${failure.error._tag}: ${failure.error.message}`)
    }
  }
}).pipe(Effect.scoped)

program.pipe(NodeRuntime.runMain)
