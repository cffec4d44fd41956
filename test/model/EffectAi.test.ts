import * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import type * as Response from "@effect/ai/Response"
import * as HttpClient from "@effect/platform/HttpClient"
import { NodeHttpClient } from "@effect/platform-node"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Duration, Effect, Equal, Exit, Fiber, Layer, Option, Redacted, Stream, TestClock } from "effect"
import * as AgentService from "../../src/agent/AgentService.js"
import { AgentTask } from "../../src/agent/AgentTask.js"
import * as AiModel from "../../src/model/AiModel.js"
import * as EffectAi from "../../src/model/EffectAi.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as OpenAiCompatible from "../../src/model/OpenAiCompatible.js"
import * as Fake from "../support/FakeProvider.js"

const request = new AiModel.CompletionRequest({ prompt: "Summarise: Effect is a TypeScript library. It is typed.", maxTokens: 32 })

const httpRequest = { method: "POST" as const, url: "https://api.example.com/v1/chat/completions", urlParams: [], hash: Option.none(), headers: {} }

const responseError = (status: number, body: string, headers: Record<string, string> = {}) =>
  new AiError.HttpResponseError({
    module: "Provider",
    method: "generateText",
    request: httpRequest,
    response: { status, headers },
    reason: "StatusCode",
    body
  })

/** A LanguageModel whose calls answer, in order, with what `script` says (parts, or an AiError). */
const scripted = (script: Array<ReadonlyArray<Response.PartEncoded> | AiError.AiError>, streamed?: Array<ReadonlyArray<Response.StreamPartEncoded> | AiError.AiError>) => {
  const seen: Array<LanguageModel.ProviderOptions> = []
  const model = LanguageModel.make({
    generateText: (options) =>
      Effect.suspend(() => {
        seen.push(options)
        const next = script.shift()
        if (next === undefined) return Effect.dieMessage("script exhausted")
        return Array.isArray(next) ? Effect.succeed([...next]) : Effect.fail(next as AiError.AiError)
      }),
    streamText: (options) =>
      Stream.suspend(() => {
        seen.push(options)
        const next = streamed?.shift()
        if (next === undefined) return Stream.dieMessage("script exhausted")
        return Array.isArray(next) ? Stream.fromIterable(next) : Stream.fail(next as AiError.AiError)
      })
  })
  return { model, seen }
}

const answer = (text: string, reason: Response.FinishReason = "stop", usage = { inputTokens: 10, outputTokens: 4, totalTokens: 14 }): ReadonlyArray<Response.PartEncoded> => [
  { type: "text", text },
  { type: "finish", reason, usage }
]

/** A config override in @effect/ai's style: a service the provider reads per call. */
class MaxTokens extends Context.Tag("test/MaxTokens")<MaxTokens, number>() {}

describe("EffectAi", () => {
  describe("fromLanguageModel: an @effect/ai LanguageModel as an AiModel", () => {
    it.effect("generate maps the text, finish reason and usage; the prompt carries the system message", () =>
      Effect.gen(function*() {
        const { model, seen } = scripted([answer("Typed effects.", "length")])
        const lm = yield* model
        const ai = EffectAi.fromLanguageModel(lm, { name: "lm" })
        const completion = yield* ai.generate(new AiModel.CompletionRequest({ prompt: "Hi", maxTokens: 8, system: "Be brief." }))
        expect(completion).toStrictEqual(
          new AiModel.Completion({ text: "Typed effects.", finishReason: "length", usage: new AiModel.Usage({ promptTokens: 10, completionTokens: 4 }), model: "lm" })
        )
        expect(seen[0]!.prompt.content.map((m) => m.role)).toStrictEqual(["system", "user"])
      }))

    it.effect("configure applies a request's maxTokens in the provider's own terms (here a config service)", () =>
      Effect.gen(function*() {
        let observed: number | undefined
        const lm = yield* LanguageModel.make({
          generateText: () =>
            Effect.map(Effect.serviceOption(MaxTokens), (max) => {
              observed = Option.getOrUndefined(max)
              return [...answer("ok")]
            }),
          streamText: () =>
            Stream.unwrap(Effect.map(Effect.serviceOption(MaxTokens), (max) => {
              observed = Option.getOrUndefined(max)
              return Stream.make<Array<Response.StreamPartEncoded>>(
                { type: "text-delta", id: "1", delta: "ok" },
                { type: "finish", reason: "stop", usage: { inputTokens: 1, outputTokens: 1, totalTokens: 2 } }
              )
            }))
        })
        const ai = EffectAi.fromLanguageModel(lm, {
          name: "lm",
          configure: (req) => (effect) => Effect.provideService(effect, MaxTokens, req.maxTokens)
        })
        yield* ai.generate(request)
        expect(observed).toBe(32)
        observed = undefined
        yield* Stream.runDrain(ai.stream(new AiModel.CompletionRequest({ prompt: "p", maxTokens: 7 })))
        expect(observed).toBe(7)
      }))

    it.effect("no usage from the provider: estimated with the Tokenizer", () =>
      Effect.gen(function*() {
        const lm = yield* scripted([answer("two words", "stop", { inputTokens: undefined as any, outputTokens: undefined as any, totalTokens: undefined as any })]).model
        const completion = yield* EffectAi.fromLanguageModel(lm, { name: "lm" }).generate(request)
        expect(completion.usage.completionTokens).toBe(3)
        expect(completion.usage.promptTokens).toBeGreaterThan(0)
      }))

    it.effect("AiErrors become typed ModelErrors: a 429 with Retry-After, 503, a context-length 400, 401, transport, decode", () =>
      Effect.gen(function*() {
        const lm = yield* scripted([
          responseError(429, "{\"error\":{\"message\":\"Rate limit reached for requests\",\"code\":\"rate_limit_exceeded\"}}", { "Retry-After": "3" }),
          responseError(503, "{\"error\":{\"message\":\"overloaded\"}}"),
          responseError(400, "{\"error\":{\"message\":\"maximum context length is 8192 tokens\",\"code\":\"context_length_exceeded\"}}"),
          responseError(401, "{\"error\":{\"message\":\"Incorrect API key provided: sk-proj-abcdefgh12345678\"}}"),
          new AiError.HttpRequestError({ module: "Provider", method: "generateText", reason: "Transport", request: httpRequest, description: "connect ECONNREFUSED" }),
          new AiError.MalformedOutput({ module: "Provider", method: "generateText", description: "bad JSON" }),
          new AiError.UnknownError({ module: "Provider", method: "generateText", description: "who knows" })
        ]).model
        const ai = EffectAi.fromLanguageModel(lm, { name: "lm" })
        const errors = []
        for (let i = 0; i < 7; i++) errors.push(yield* Effect.flip(ai.generate(request)))
        expect(errors[0]).toStrictEqual(new AiModel.RateLimited({ model: "lm", limit: "requests", retryAfter: Duration.millis(3000) }))
        expect(errors[1]).toStrictEqual(new AiModel.Overloaded({ model: "lm" }))
        expect(errors[2]).toMatchObject({ _tag: "InvalidRequest", contextLengthExceeded: true })
        expect(errors[3]).toMatchObject({ _tag: "AuthenticationFailed", status: 401 })
        expect(errors[3]!.message).not.toContain("sk-proj-abcdefgh12345678")
        expect(errors[4]).toStrictEqual(new AiModel.Unavailable({ model: "lm", reason: "connect ECONNREFUSED" }))
        expect(errors[5]).toStrictEqual(new AiModel.MalformedResponse({ model: "lm", reason: "bad JSON" }))
        expect(errors[6]).toStrictEqual(new AiModel.ProviderError({ model: "lm", status: 0, reason: "who knows" }))
      }))

    it.effect("stream: text deltas, then the finish part as the final chunk; an error part or a missing finish is IncompleteStream", () =>
      Effect.gen(function*() {
        const lm = yield* scripted([], [
          [
            { type: "text-start", id: "1" },
            { type: "text-delta", id: "1", delta: "Typed" },
            { type: "text-delta", id: "1", delta: " effects" },
            { type: "text-end", id: "1" },
            { type: "finish", reason: "stop", usage: { inputTokens: 5, outputTokens: 2, totalTokens: 7 } }
          ],
          [{ type: "text-delta", id: "1", delta: "half" }, { type: "error", error: "connection reset" }],
          [{ type: "text-delta", id: "1", delta: "no end" }],
          responseError(529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}")
        ]).model
        const ai = EffectAi.fromLanguageModel(lm, { name: "lm" })
        expect(Chunk.toReadonlyArray(yield* Stream.runCollect(ai.stream(request)))).toStrictEqual([
          new AiModel.CompletionChunk({ delta: "Typed" }),
          new AiModel.CompletionChunk({ delta: " effects" }),
          new AiModel.CompletionChunk({ delta: "", finishReason: "stop", usage: new AiModel.Usage({ promptTokens: 5, completionTokens: 2 }) })
        ])
        expect(yield* Effect.flip(Stream.runDrain(ai.stream(request)))).toStrictEqual(
          new AiModel.IncompleteStream({ model: "lm", partial: "half", reason: "the provider sent an error: connection reset" })
        )
        expect(yield* Effect.flip(Stream.runDrain(ai.stream(request)))).toStrictEqual(
          new AiModel.IncompleteStream({ model: "lm", partial: "no end", reason: "the stream ended without its finish part" })
        )
        expect(yield* Effect.flip(Stream.runDrain(ai.stream(request)))).toStrictEqual(new AiModel.Overloaded({ model: "lm" }))
      }))

    it.effect("issue 17.10: with withResponseHeaders on the provider's client, each answer carries its rate-limit report, and the default budget learns the limits", () =>
      Effect.gen(function*() {
        const headers = Fake.openAiHeaders({ limit: 500, remaining: 499, resetMillis: 120 }, { limit: 200_000, remaining: 199_000, resetMillis: 300 })
        // a provider in @effect/ai's style: its calls go through an HttpClient it was given
        const provider = (transform: (client: HttpClient.HttpClient) => HttpClient.HttpClient) => {
          const client = transform(HttpClient.make((req) => Effect.succeed(HttpClientResponse.fromWeb(req, new globalThis.Response("{}", { headers })))))
          const call = client.execute(HttpClientRequest.post("https://api.example.com/v1/responses"))
          return LanguageModel.make({
            generateText: () => Effect.as(Effect.orDie(call), [...answer("ok")]),
            streamText: () =>
              Stream.unwrap(Effect.as(
                Effect.orDie(call),
                Stream.make<Array<Response.StreamPartEncoded>>(
                  { type: "text-delta", id: "1", delta: "ok" },
                  { type: "finish", reason: "stop", usage: { inputTokens: 1, outputTokens: 1, totalTokens: 2 } }
                )
              ))
          })
        }
        const withHeaders = EffectAi.fromLanguageModel(yield* provider(EffectAi.withResponseHeaders), { name: "lm" })
        const expected = new AiModel.RateLimits({
          requests: new AiModel.RateLimitWindow({ limit: 500, remaining: 499, reset: Duration.millis(120) }),
          tokens: new AiModel.RateLimitWindow({ limit: 200_000, remaining: 199_000, reset: Duration.millis(300) })
        })
        expect((yield* withHeaders.generate(request)).rateLimits).toStrictEqual(expected)
        const chunks = Chunk.toReadonlyArray(yield* Stream.runCollect(withHeaders.stream(request)))
        expect(chunks.at(-1)?.rateLimits).toStrictEqual(expected)
        // without it no headers reach us: nothing to learn from an answer (give the budget limits)
        const without = EffectAi.fromLanguageModel(yield* provider((client) => client), { name: "lm" })
        expect((yield* without.generate(request)).rateLimits).toBeUndefined()
        // through AgentService's default budget (learning): one answer teaches it both limits
        const flow = yield* Effect.gen(function*() {
          const agent = yield* AgentService.AgentService
          yield* agent.process(new AgentTask({ id: "t", prompt: "Summarise: x." }))
          return yield* agent.flow
        }).pipe(Effect.provide(AgentService.layer().pipe(Layer.provide(Layer.succeed(AiModel.AiModel, withHeaders)))))
        expect(flow.budgets["lm"]?.dimensions.requests?.capacity).toBe(500)
        expect(flow.budgets["lm"]?.dimensions.tokens?.capacity).toBe(200_000)
      }))

    it.effect("seed bug 4 through AgentService: an @effect/ai provider's 429 is retried after its Retry-After, a 400 is not", () =>
      Effect.gen(function*() {
        const { model, seen } = scripted([
          responseError(429, "{\"error\":{\"message\":\"slow down\",\"code\":\"rate_limit_exceeded\"}}", { "retry-after": "2" }),
          answer("after the wait"),
          responseError(400, "{\"error\":{\"message\":\"bad temperature\"}}")
        ])
        const layer = AgentService.layer({ retry: { maxAttempts: 3, jitter: "none" }, breaker: false }).pipe(
          Layer.provide(EffectAi.layer({ name: "lm" })),
          Layer.provide(Layer.effect(LanguageModel.LanguageModel, model))
        )
        yield* Effect.gen(function*() {
          const agent = yield* AgentService.AgentService
          const fiber = yield* Effect.fork(agent.process(new AgentTask({ id: "t", prompt: "Summarise: x." })))
          yield* TestClock.adjust("1999 millis")
          expect(seen.length).toBe(1)
          yield* TestClock.adjust("1 millis")
          expect(yield* Fiber.join(fiber)).toMatchObject({ _tag: "TaskSucceeded", output: "after the wait", attempts: 2 })
          const failed = yield* Effect.flip(agent.process(new AgentTask({ id: "u", prompt: "Summarise: y." })))
          expect(failed).toMatchObject({ attempts: 1, error: { _tag: "InvalidRequest" } })
        }).pipe(Effect.provide(layer))
      }))
  })

  describe("toLanguageModel: an AiModel as an @effect/ai LanguageModel", () => {
    it.effect("generateText and streamText answer with the AiModel's text, finish reason and usage", () =>
      Effect.gen(function*() {
        const embedded = yield* EmbeddedModel.make({ seed: 1, timeToFirstToken: 0, perToken: 0 })
        const expected = yield* embedded.generate(new AiModel.CompletionRequest({ prompt: request.prompt, maxTokens: 1024, system: "Be brief." }))
        const lm = yield* EffectAi.toLanguageModel(embedded)
        const prompt = [{ role: "system" as const, content: "Be brief." }, { role: "user" as const, content: request.prompt }]
        const response = yield* lm.generateText({ prompt })
        expect(response.text).toBe(expected.text)
        expect(response.finishReason).toBe("stop")
        expect(response.usage.inputTokens).toBe(expected.usage.promptTokens)
        expect(response.usage.outputTokens).toBe(expected.usage.completionTokens)
        const parts = Chunk.toReadonlyArray(yield* Stream.runCollect(lm.streamText({ prompt })))
        expect(parts.flatMap((p) => (p.type === "text-delta" ? [p.delta] : [])).join("")).toBe(expected.text)
        expect(parts.at(-1)).toMatchObject({ type: "finish", reason: "stop" })
      }))

    it.effect("issue 17.10: a chat's turns go as messages (and written out in prompt); tools are refused with MalformedInput", () =>
      Effect.gen(function*() {
        let asked: AiModel.CompletionRequest | undefined
        const echo = AiModel.make({
          name: "echo",
          generate: (req) =>
            Effect.sync(() => {
              asked = req
              return new AiModel.Completion({ text: "ok", finishReason: "stop", usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }), model: "echo" })
            })
        })
        const lm = yield* EffectAi.toLanguageModel(echo, { maxTokens: 50 })
        yield* lm.generateText({
          prompt: [
            { role: "system", content: "Be brief." },
            { role: "user", content: "What is Effect?" },
            { role: "assistant", content: [{ type: "reasoning", text: "they ask about a library" }, { type: "text", text: "A library." }] },
            { role: "user", content: "For what language?" }
          ]
        })
        expect(asked).toStrictEqual(new AiModel.CompletionRequest({
          prompt: "User: What is Effect?\n\nAssistant: A library.\n\nUser: For what language?",
          maxTokens: 50,
          system: "Be brief.",
          messages: [
            { role: "user", content: "What is Effect?" },
            { role: "assistant", content: "A library." },
            { role: "user", content: "For what language?" }
          ]
        }))
        // one user turn stays a plain prompt
        yield* lm.generateText({ prompt: "Hello" })
        expect(asked).toStrictEqual(new AiModel.CompletionRequest({ prompt: "Hello", maxTokens: 50 }))
        const refused = yield* Effect.flip(lm.generateText({ prompt: "   " }))
        expect(refused._tag).toBe("MalformedInput")
      }))

    it.scoped("issue 17.10: through the OpenAI-compatible client, a chat's turns reach the provider as messages", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make()
        const lm = yield* EffectAi.toLanguageModel(yield* OpenAiCompatible.make({ baseUrl: fake.url, model: "test-model", apiKey: Redacted.make("sk-test") }))
        yield* lm.generateText({
          prompt: [
            { role: "system", content: "Be brief." },
            { role: "user", content: "What is Effect?" },
            { role: "assistant", content: "A library." },
            { role: "user", content: "For what language?" }
          ]
        })
        const [sent] = yield* fake.requests
        expect((sent!.body as { messages: unknown }).messages).toStrictEqual([
          { role: "system", content: "Be brief." },
          { role: "user", content: "What is Effect?" },
          { role: "assistant", content: "A library." },
          { role: "user", content: "For what language?" }
        ])
      }).pipe(Effect.provide(NodeHttpClient.layerUndici)))

    it.effect("issue 17.10: an image or a file part, a tool call or a tool message fails loudly with MalformedInput naming it", () =>
      Effect.gen(function*() {
        let calls = 0
        const echo = AiModel.make({
          name: "echo",
          generate: () =>
            Effect.sync(() => {
              calls++
              return new AiModel.Completion({ text: "ok", finishReason: "stop", usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }), model: "echo" })
            })
        })
        const lm = yield* EffectAi.toLanguageModel(echo)
        const image = { type: "file" as const, mediaType: "image/png", data: new Uint8Array([137, 80, 78, 71]) }
        const pdf = { type: "file" as const, mediaType: "application/pdf", data: "JVBERi0=" }
        const cases = [
          { prompt: [{ role: "user" as const, content: [{ type: "text" as const, text: "What is in it?" }, image] }], names: "image part (image/png)" },
          { prompt: [{ role: "user" as const, content: [{ type: "text" as const, text: "Summarise." }, pdf] }], names: "file part (application/pdf)" },
          {
            prompt: [
              { role: "user" as const, content: "Weather?" },
              { role: "assistant" as const, content: [{ type: "tool-call" as const, id: "c1", name: "weather", params: {}, providerExecuted: false }] }
            ],
            names: "tool-call part"
          },
          {
            prompt: [
              { role: "user" as const, content: "Weather?" },
              { role: "tool" as const, content: [{ type: "tool-result" as const, id: "c1", name: "weather", isFailure: false, result: "sunny", providerExecuted: false }] }
            ],
            names: "a tool message"
          }
        ]
        for (const { names, prompt } of cases) {
          const refused = yield* Effect.flip(lm.generateText({ prompt }))
          expect(refused._tag).toBe("MalformedInput")
          expect(refused.message).toContain(names)
          const streamed = yield* Effect.flip(Stream.runDrain(lm.streamText({ prompt })))
          expect(streamed._tag).toBe("MalformedInput")
        }
        expect(calls).toBe(0)
      }))

    it.effect("issue 17.10: errors come as the AiError @effect/ai users match on: HttpResponseError with its status and retry-after, HttpRequestError for transport, ours as the cause", () =>
      Effect.gen(function*() {
        const cases: ReadonlyArray<readonly [AiModel.ModelError, string, number | undefined, Record<string, string>]> = [
          [new AiModel.RateLimited({ model: "m", limit: "requests", retryAfter: Duration.millis(2500) }), "HttpResponseError", 429, { "retry-after": "3" }],
          [new AiModel.QuotaExhausted({ model: "m", reason: "no credit" }), "HttpResponseError", 429, {}],
          [new AiModel.Overloaded({ model: "m" }), "HttpResponseError", 503, {}],
          [new AiModel.AuthenticationFailed({ model: "m", status: 401, reason: "bad key" }), "HttpResponseError", 401, {}],
          [new AiModel.ProviderError({ model: "m", status: 502, reason: "bad gateway" }), "HttpResponseError", 502, {}],
          [new AiModel.InvalidRequest({ model: "m", reason: "too long", contextLengthExceeded: true }), "HttpResponseError", 400, {}],
          [new AiModel.Unavailable({ model: "m", reason: "connect ECONNREFUSED" }), "HttpRequestError", undefined, {}],
          [new AiModel.MalformedResponse({ model: "m", reason: "bad JSON" }), "MalformedOutput", undefined, {}],
          [new AiModel.ModelTimeout({ model: "m", timeout: Duration.seconds(30) }), "UnknownError", undefined, {}]
        ]
        for (const [error, tag, status, headers] of cases) {
          const lm = yield* EffectAi.toLanguageModel(AiModel.make({ name: "m", generate: () => Effect.fail(error) }))
          for (const failed of [yield* Effect.flip(lm.generateText({ prompt: "Hi" })), yield* Effect.flip(Stream.runDrain(lm.streamText({ prompt: "Hi" })))]) {
            expect(failed._tag).toBe(tag)
            // ours (as Effect keeps a failure raised inside a span: a proxy carrying the span)
            expect(failed.cause).toBeInstanceOf(error.constructor)
            expect(Equal.equals(failed.cause, error)).toBe(true)
            if (failed._tag === "HttpResponseError") {
              expect(failed.response.status).toBe(status)
              expect(failed.response.headers).toStrictEqual(headers)
              expect(failed.reason).toBe("StatusCode")
            }
            if (failed._tag === "HttpRequestError") expect(failed.reason).toBe("Transport")
          }
        }
        // the body says what OpenAI's would: a quota 429 is not a rate limit, a 400 may be the context length
        const quota = yield* Effect.flip((yield* EffectAi.toLanguageModel(AiModel.make({ name: "m", generate: () => Effect.fail(new AiModel.QuotaExhausted({ model: "m", reason: "x" })) }))).generateText({ prompt: "Hi" }))
        expect(quota._tag === "HttpResponseError" && JSON.parse(quota.body ?? "{}").error.code).toBe("insufficient_quota")
      }))

    it.effect("round trip: a ModelError goes out as an AiError's cause and comes back unchanged", () =>
      Effect.gen(function*() {
        const errors: ReadonlyArray<AiModel.ModelError> = [
          new AiModel.RateLimited({ model: "m", limit: "tokens", retryAfter: Duration.seconds(4) }),
          new AiModel.InvalidRequest({ model: "m", reason: "too long", contextLengthExceeded: true }),
          new AiModel.MalformedResponse({ model: "m", reason: "x" })
        ]
        for (const error of errors) {
          const failing = AiModel.make({ name: "m", generate: () => Effect.fail(error) })
          const back = EffectAi.fromLanguageModel(yield* EffectAi.toLanguageModel(failing), { name: "m" })
          expect(yield* Effect.exit(back.generate(request))).toStrictEqual(Exit.fail(error))
          expect(yield* Effect.exit(Stream.runDrain(back.stream(request)))).toStrictEqual(Exit.fail(error))
        }
        const ok = EffectAi.fromLanguageModel(yield* EffectAi.toLanguageModel(yield* EmbeddedModel.make({ seed: 2, timeToFirstToken: 0, perToken: 0 })), { name: "m" })
        expect((yield* ok.generate(request)).text.length).toBeGreaterThan(0)
      }))

    it.effect("languageModelLayer provides LanguageModel from the AiModel in context", () =>
      Effect.gen(function*() {
        const response = yield* LanguageModel.generateText({ prompt: request.prompt }).pipe(
          Effect.provide(EffectAi.languageModelLayer().pipe(Layer.provide(EmbeddedModel.layer({ seed: 1, timeToFirstToken: 0, perToken: 0 }))))
        )
        expect(response.text.length).toBeGreaterThan(0)
      }))
  })
})
