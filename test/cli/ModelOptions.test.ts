import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Fiber, Option, TestClock } from "effect"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as ModelOptions from "../../src/cli/ModelOptions.js"

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

const refusal = (options: Partial<ModelOptions.AgentOptions>, env: Record<string, string> = {}) =>
  ModelOptions.layer({ ...ModelOptions.defaults, ...options }).pipe(
    Effect.flip,
    Effect.map((error) => [error._tag, error.message]),
    withEnv(env)
  )

const http = {
  model: "openai-compatible",
  baseUrl: Option.some("http://localhost:11434/v1"),
  modelName: Option.some("llama3.2")
} as const

describe("ModelOptions", () => {
  it.effect("options that do not go together are a UsageError saying which, found before any model is built", () =>
    Effect.gen(function*() {
      expect(yield* refusal({ baseUrl: Option.some("http://localhost:8080/v1") })).toEqual([
        "UsageError",
        "--base-url and --api-key-env apply only to --model openai-compatible"
      ])
      expect(yield* refusal({ apiKeyEnv: Option.some("OPENAI_API_KEY") })).toEqual([
        "UsageError",
        "--base-url and --api-key-env apply only to --model openai-compatible"
      ])
      expect(yield* refusal({ modelName: Option.some("gpt-4o-mini") })).toEqual([
        "UsageError",
        "--model-name applies only to --model openai-compatible"
      ])
      expect((yield* refusal({ ...http, modelName: Option.none() }))[1]).toMatch(/^--model openai-compatible needs --base-url URL and --model-name NAME/)
      expect((yield* refusal({ ...http, baseUrl: Option.none() }))[1]).toMatch(/^--model openai-compatible needs --base-url URL/)
      expect((yield* refusal({ outageAfter: Option.some(Duration.seconds(1)) }))[1]).toMatch(/^--outage-after and --outage-for go together/)
      expect((yield* refusal({ outageFor: Option.some(Duration.seconds(1)) }))[1]).toMatch(/^--outage-after and --outage-for go together/)
    }))

  it.effect("the API key is read from the variable --api-key-env names: unset or blank is a usage error, set builds the model", () =>
    Effect.gen(function*() {
      const keyed = { ...http, apiKeyEnv: Option.some("WIZ_TEST_KEY") }
      const notSet = ["UsageError", "--api-key-env WIZ_TEST_KEY: that environment variable is not set"]
      expect(yield* refusal(keyed)).toEqual(notSet)
      expect(yield* refusal(keyed, { WIZ_TEST_KEY: "   " })).toEqual(notSet)
      // set: the layer is built, without a request (the model is asked nothing yet)
      yield* ModelOptions.layer({ ...ModelOptions.defaults, ...keyed }).pipe(withEnv({ WIZ_TEST_KEY: "sk-test" }))
      // no key at all is fine for a local server
      yield* ModelOptions.layer({ ...ModelOptions.defaults, ...http })
    }))

  it.effect("the agent runs with the options' policies: --retries N makes N + 1 attempts of a model that always fails", () =>
    Effect.gen(function*() {
      const attemptsWith = (retries: number) =>
        Effect.gen(function*() {
          const agent = yield* ModelOptions.layer(
            { ...ModelOptions.defaults, retries, failureRate: 1, seed: Option.some(4), timeout: Duration.seconds(1) },
            { concurrency: 1 }
          )
          const fiber = yield* AgentService.AgentService.pipe(
            Effect.flatMap((service) => service.process(new AgentTask({ id: "t", prompt: "Summarise: a task that always fails." }))),
            Effect.merge,
            Effect.provide(agent),
            Effect.fork
          )
          while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("1 second")
          const record = yield* Fiber.join(fiber)
          return [record.status, record.attempts]
        })
      expect(yield* attemptsWith(0)).toEqual(["failed", 1])
      expect(yield* attemptsWith(2)).toEqual(["failed", 3])
    }))

  it.effect("defaults: the embedded model with no outage, retries one less than the retry policy's attempts", () =>
    Effect.gen(function*() {
      expect(ModelOptions.defaults.model).toBe("embedded")
      expect([ModelOptions.defaults.outageAfter, ModelOptions.defaults.outageFor]).toEqual([Option.none(), Option.none()])
      expect(ModelOptions.defaults.timeout).toEqual(AgentService.defaults.timeout)
      expect(ModelOptions.defaults.deadline).toEqual(AgentService.defaults.deadline)
      // the default options build an agent
      yield* ModelOptions.layer(ModelOptions.defaults)
    }))
})
