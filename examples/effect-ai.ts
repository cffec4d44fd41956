/**
 * @effect/ai: any `LanguageModel` provider under wiz-effect's resilience stack, and any
 * `AiModel` (here the embedded simulator) as an @effect/ai `LanguageModel`.
 *
 *   npx tsx examples/effect-ai.ts
 *
 * In your own code, import from "wiz-effect" and "wiz-effect/model/EffectAi" instead of
 * "../src/...". The flaky provider below stands in for a real one (`OpenAiLanguageModel`,
 * `AnthropicLanguageModel`, ...): its first call is refused with a 429 and `retry-after-ms: 200`.
 */
import * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Console, Effect, Layer, Option, Stream } from "effect"
import { AgentEvent, AgentService, AgentTask, EmbeddedModel } from "../src/index.js"
import * as EffectAi from "../src/model/EffectAi.js"

/** An @effect/ai provider that answers the way a real one's HTTP client fails: a 429 first. */
const FlakyProvider = Layer.effect(
  LanguageModel.LanguageModel,
  Effect.suspend(() => {
    let calls = 0
    return LanguageModel.make({
      generateText: (options) =>
        Effect.suspend(() => {
          if (++calls === 1) {
            return Effect.fail(
              new AiError.HttpResponseError({
                module: "FlakyProvider",
                method: "generateText",
                request: { method: "POST", url: "https://api.example.com/v1/chat/completions", urlParams: [], hash: Option.none(), headers: {} },
                response: { status: 429, headers: { "retry-after-ms": "200" } },
                reason: "StatusCode",
                body: JSON.stringify({ error: { message: "Rate limit reached for requests", code: "rate_limit_exceeded" } })
              })
            )
          }
          const asked = options.prompt.content.at(-1)
          const text = asked?.role === "user" ? asked.content.flatMap((p) => (p.type === "text" ? [p.text] : [])).join("") : ""
          return Effect.succeed([
            { type: "text" as const, text: `(flaky provider) you asked: ${text}` },
            { type: "finish" as const, reason: "stop" as const, usage: { inputTokens: 12, outputTokens: 8, totalTokens: 20 } }
          ])
        }),
      streamText: () => Stream.dieMessage("not used in this example")
    })
  })
)

const program = Effect.gen(function*() {
  yield* Console.log("1. An @effect/ai provider through AgentService: its 429 is a typed RateLimited, retried after its retry-after-ms")
  const start = yield* Clock.currentTimeMillis
  const result = yield* Effect.gen(function*() {
    const agent = yield* AgentService.AgentService
    const events = yield* agent.subscribe
    const result = yield* agent.process(new AgentTask.AgentTask({ id: "t1", prompt: "What is Effect?" }))
    const retries = yield* Stream.runCollect(events.pipe(Stream.filter(AgentEvent.is("RetryScheduled")), Stream.take(1)))
    for (const retry of retries) yield* Console.log(`   retry scheduled after ${retry.error._tag}, waiting ${retry.delayMillis} ms`)
    return result
  }).pipe(
    Effect.scoped,
    Effect.provide(
      AgentService.layer({ retry: { maxAttempts: 3, jitter: "none", base: "50 millis" } }).pipe(
        Layer.provide(EffectAi.layer({ name: "flaky-provider" })),
        Layer.provide(FlakyProvider)
      )
    )
  )
  const took = (yield* Clock.currentTimeMillis) - start
  yield* Console.log(`   => ${result.output} (attempts: ${result.attempts}, ${took} ms)`)

  yield* Console.log("2. The embedded model as an @effect/ai LanguageModel: LanguageModel.generateText works on it")
  const response = yield* LanguageModel.generateText({
    prompt: [
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "Summarise: Effect is a TypeScript library. It makes errors and dependencies typed." }
    ]
  }).pipe(
    Effect.provide(EffectAi.languageModelLayer({ maxTokens: 64 }).pipe(Layer.provide(EmbeddedModel.layer({ seed: 1, timeToFirstToken: 0, perToken: 0 }))))
  )
  yield* Console.log(`   => ${JSON.stringify(response.text)} (finish: ${response.finishReason}, output tokens: ${response.usage.outputTokens})`)
})

NodeRuntime.runMain(program)
