import { describe, expect, it } from "@effect/vitest"
import { Chunk, ConfigProvider, Duration, Effect, Fiber, Option, Stream, TestClock } from "effect"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as ModelOptions from "../../src/cli/ModelOptions.js"
import * as Fake from "../support/FakeProvider.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

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

  it.effect("--rpm the batch never reaches holds no task back when others meet a 429 without a report: only the refused task waits its Retry-After", () =>
    Effect.gen(function*() {
      const tasks = Array.from({ length: 120 }, (_, i) => new AgentTask({ id: `t${i}`, prompt: `Summarise note ${i}: the budget is shared.` }))
      const agent = yield* ModelOptions.layer(
        // a tenth of the calls answer a 429 with a Retry-After of 0.5-2 s and no rate-limit report
        { ...ModelOptions.defaults, rpm: Option.some(100_000), failureRate: 0.2, seed: Option.some(7), timeout: Duration.seconds(2) },
        { concurrency: 16 }
      )
      const fiber = yield* AgentService.AgentService.pipe(
        Effect.flatMap((service) => Stream.runCollect(service.processAll(tasks))),
        Effect.provide(agent),
        Effect.fork
      )
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("1 second")
      const records = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
      expect(records.filter((record) => record.status === "succeeded").length).toBeGreaterThanOrEqual(118)
      // held, the budget kept every task behind any 429 (before: 115 of the 120 waited for it)
      const waited = records.filter((record) => (record.budgetWaitMs ?? 0) > 0)
      expect(waited).toEqual([])
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

  it.effect("fallback options that do not go together are a UsageError saying which", () =>
    Effect.gen(function*() {
      expect(yield* refusal({ fallbackBaseUrl: ["http://localhost:8080/v1"] })).toEqual([
        "UsageError",
        "--fallback-base-url and --fallback-api-key-env go with --fallback-model-name"
      ])
      // the embedded model has no URL to default to
      expect((yield* refusal({ fallbackModelName: ["small"] }))[1]).toBe("--fallback-model-name needs --fallback-base-url URL (or --base-url)")
      // once for all the tiers or once per tier: two URLs for three tiers is neither
      expect((yield* refusal({ ...http, fallbackModelName: ["a", "b", "c"], fallbackBaseUrl: ["http://x/v1", "http://y/v1"] }))[1]).toBe(
        "--fallback-base-url: give it once for all the fallback tiers or once per tier; 2 for 3 --fallback-model-name"
      )
      expect((yield* refusal({ ...http, fallbackModelName: ["a"], fallbackApiKeyEnv: ["WIZ_TEST_FALLBACK_KEY"] }))[1]).toBe(
        "--fallback-api-key-env WIZ_TEST_FALLBACK_KEY: that environment variable is not set"
      )
    }))

  it.scopedLive("--fallback-model-name repeated is a chain: wiz ask falls from a failing model to the first tier, then the second, each on its own API with its own key", () =>
    Effect.gen(function*() {
      const [primary, first, second] = yield* Effect.all([Fake.make(), Fake.make(), Fake.make()])
      const refused = Fake.raw(500, JSON.stringify({ error: { message: "boom", type: "server_error", param: null, code: null } }), {
        headers: { "content-type": "application/json" }
      })
      yield* primary.script(refused, refused, refused)
      yield* first.script(refused, refused, refused)
      yield* second.script(Fake.answer({ text: "from the second tier" }))
      const stdio = TestStdio.make()
      const code = yield* Wiz.exitCode(
        stdio,
        "ask",
        "Say where you are.",
        "--retries",
        "0",
        "--model",
        "openai-compatible",
        "--base-url",
        primary.url,
        "--model-name",
        "big",
        "--fallback-model-name",
        "medium",
        "--fallback-base-url",
        first.url,
        "--fallback-api-key-env",
        "WIZ_TEST_FIRST_KEY",
        "--fallback-model-name",
        "small",
        "--fallback-base-url",
        second.url,
        "--fallback-api-key-env",
        "WIZ_TEST_SECOND_KEY"
      ).pipe(withEnv({ WIZ_TEST_FIRST_KEY: "sk-first-tier", WIZ_TEST_SECOND_KEY: "sk-second-tier" }))
      expect(stdio.stdout()).toBe("from the second tier\n")
      expect(code).toBe(0)
      const asked = (requests: ReadonlyArray<Fake.Received>) =>
        requests.map((request) => [(request.body as { model: string }).model, request.headers["authorization"]])
      // tried in the order given, each tier with its own model name and key, once (--retries 0)
      expect(asked(yield* primary.requests)).toEqual([["big", undefined]])
      expect(asked(yield* first.requests)).toEqual([["medium", "Bearer sk-first-tier"]])
      expect(asked(yield* second.requests)).toEqual([["small", "Bearer sk-second-tier"]])
    }))
})
