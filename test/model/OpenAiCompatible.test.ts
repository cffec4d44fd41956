import { FetchHttpClient } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import { Chunk, Config, ConfigProvider, Duration, Effect, Exit, Fiber, Layer, Option, Redacted, Stream, TestClock, Tracer } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as OpenAiCompatible from "../../src/model/OpenAiCompatible.js"
import * as Tokenizer from "../../src/model/Tokenizer.js"
import * as Fake from "../support/FakeProvider.js"
import { awaitTimer } from "../support/timers.js"

const key = "sk-wiz-test-5f3a9c1d7e2b4a6f8091"
const request = new AiModel.CompletionRequest({ prompt: "Summarise: Effect is a TypeScript library. It is typed.", maxTokens: 64 })
const usage = (promptTokens: number, completionTokens: number) => new AiModel.Usage({ promptTokens, completionTokens })

const setup = (options: Partial<OpenAiCompatible.Options> = {}, fakeOptions: Fake.Options = {}) =>
  Effect.gen(function*() {
    const fake = yield* Fake.make(fakeOptions)
    const model = yield* OpenAiCompatible.make({ baseUrl: fake.url, model: "test-model", apiKey: Redacted.make(key), ...options })
    return { fake, model }
  })

const collect = <E>(stream: Stream.Stream<AiModel.CompletionChunk, E>) =>
  Effect.map(Stream.runCollect(stream), Chunk.toReadonlyArray)

const text = (chunks: ReadonlyArray<AiModel.CompletionChunk>) => chunks.map((c) => c.delta).join("")

const errorJson = (error: Record<string, unknown>) => JSON.stringify({ error })
const json = { "content-type": "application/json" }

layer(NodeHttpClient.layerUndici)("OpenAiCompatible", (it) => {
  describe("the protocol", () => {
    it.scoped("generate POSTs {baseUrl}/chat/completions with the key, organisation, extra headers and body fields", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ organization: "org-42", headers: { "OpenAI-Project": "proj-7" }, body: { seed: 7 } })
        yield* fake.script(Fake.answer({ text: "Effect is a typed library.", finishReason: "length", usage: { prompt: 12, completion: 6 } }))
        const completion = yield* model.generate(
          new AiModel.CompletionRequest({ prompt: "Summarise it.", maxTokens: 6, system: "Be brief.", temperature: 0.2 })
        )
        expect(completion).toStrictEqual(
          new AiModel.Completion({ text: "Effect is a typed library.", finishReason: "length", usage: usage(12, 6), model: "test-model" })
        )
        const [sent] = yield* fake.requests
        expect(sent!.method).toBe("POST")
        expect(sent!.path).toBe("/v1/chat/completions")
        expect(sent!.headers["authorization"]).toBe(`Bearer ${key}`)
        expect(sent!.headers["openai-organization"]).toBe("org-42")
        expect(sent!.headers["openai-project"]).toBe("proj-7")
        expect(sent!.headers["content-type"]).toBe("application/json")
        expect(sent!.body).toStrictEqual({
          seed: 7,
          model: "test-model",
          messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Summarise it." }],
          max_tokens: 6,
          temperature: 0.2
        })
      }))

    it.scoped("maxTokensField: max_completion_tokens for OpenAI's reasoning models; no key, no Authorization header", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ apiKey: undefined, maxTokensField: "max_completion_tokens" })
        yield* model.generate(request)
        const [sent] = yield* fake.requests
        expect(sent!.headers["authorization"]).toBeUndefined()
        expect(sent!.body).toMatchObject({ max_completion_tokens: 64 })
        expect(sent!.body).not.toHaveProperty("max_tokens")
      }))

    it.scoped("stream asks for stream: true with include_usage; the final chunk has the finish reason, the usage chunk's usage and the rate limits", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const answer = "Héllo wörld, 😀 中文 done."
        yield* fake.script(Fake.answer({
          text: answer,
          usage: { prompt: 9, completion: 7 },
          headers: Fake.openAiHeaders({ limit: 500, remaining: 499, resetMillis: 120 }, { limit: 30_000, remaining: 29_000, resetMillis: 6_000 })
        }))
        const chunks = yield* collect(model.stream(request))
        expect(text(chunks)).toBe(answer)
        expect(chunks.length).toBeGreaterThan(2)
        expect(chunks.slice(0, -1).every((c) => c.finishReason === undefined && c.usage === undefined)).toBe(true)
        expect(chunks.at(-1)).toStrictEqual(
          new AiModel.CompletionChunk({
            delta: "",
            finishReason: "stop",
            usage: usage(9, 7),
            rateLimits: new AiModel.RateLimits({
              requests: new AiModel.RateLimitWindow({ limit: 500, remaining: 499, reset: Duration.millis(120) }),
              tokens: new AiModel.RateLimitWindow({ limit: 30_000, remaining: 29_000, reset: Duration.millis(6000) })
            })
          })
        )
        const [sent] = yield* fake.requests
        expect(sent!.headers["accept"]).toBe("text/event-stream")
        expect(sent!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } })
      }))

    it.scoped("rate limits on a success: Anthropic's RFC 3339 resets are taken relative to the Clock (TestClock here)", () =>
      Effect.gen(function*() {
        const now = Date.parse("2025-03-07T12:00:00Z")
        yield* TestClock.setTime(now)
        const { fake, model } = yield* setup()
        const window = { limit: 50, remaining: 49, resetMillis: 1500 }
        yield* fake.script(Fake.answer({ text: "ok", headers: Fake.anthropicHeaders(now, { requests: window, inputTokens: window, outputTokens: window }) }))
        const completion = yield* model.generate(request)
        const expected = new AiModel.RateLimitWindow({ limit: 50, remaining: 49, reset: Duration.millis(1500) })
        expect(completion.rateLimits).toStrictEqual(new AiModel.RateLimits({ requests: expected, inputTokens: expected, outputTokens: expected }))
      }))

    it.scoped("a stream without a usage chunk (streamUsage: false, or a server that ignores it) estimates usage with the Tokenizer", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ streamUsage: false })
        yield* fake.script(Fake.answer({ text: "two words" }))
        const chunks = yield* collect(model.stream(request))
        expect(chunks.at(-1)!.usage).toStrictEqual(usage(Tokenizer.count(request.prompt), Tokenizer.count("two words")))
        expect((yield* fake.requests)[0]!.body).not.toHaveProperty("stream_options")
      }))

    it.scoped("a server that ignores stream: true and answers with the whole JSON still streams, as one final chunk", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.raw(200, JSON.stringify({
          choices: [{ index: 0, message: { role: "assistant", content: "whole" }, finish_reason: "stop" }],
          usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }
        }), { headers: json }))
        expect(yield* collect(model.stream(request))).toStrictEqual([
          new AiModel.CompletionChunk({ delta: "whole", finishReason: "stop", usage: usage(3, 1) })
        ])
      }))

    it.scoped("SSE chunks split mid-line and mid-UTF-8 character, at every size from 1 byte, give the same text", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const answer = "Ünïcödé 😀 across 中文 boundaries — fine."
        for (const split of [1, 2, 3, 5, 7, 13]) {
          yield* fake.script(Fake.answer({ text: answer, split, usage: { prompt: 1, completion: 1 } }))
          const chunks = yield* collect(model.stream(request))
          expect(text(chunks)).toBe(answer)
          expect(chunks.at(-1)!.finishReason).toBe("stop")
        }
      }))

    it.scoped("a whole answer split mid-UTF-8 character and sent chunked (no content-length) decodes whole", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const body = JSON.stringify({ choices: [{ index: 0, message: { role: "assistant", content: "naïve 😀" }, finish_reason: "stop" }], usage: { prompt_tokens: 1, completion_tokens: 2 } })
        yield* fake.script(Fake.raw(200, body, { headers: json, split: 3, chunked: true }))
        expect((yield* model.generate(request)).text).toBe("naïve 😀")
      }))
  })

  describe("errors: each fault is its typed error", () => {
    const fails = (model: AiModel.AiModel.Service) => Effect.flip(model.generate(request))

    it.scoped("429 in each header format is RateLimited with the limit, retryAfter and rateLimits the provider gave", () =>
      Effect.gen(function*() {
        const now = Date.parse("2025-03-07T12:00:00Z")
        yield* TestClock.setTime(now)
        const { fake, model } = yield* setup()
        const cases: ReadonlyArray<[string, Fake.Reply, Partial<AiModel.RateLimited>]> = [
          [
            "Retry-After in seconds",
            Fake.error(429, { message: "Rate limit reached for requests", type: "requests", code: "rate_limit_exceeded" }, { "retry-after": "7" }),
            { limit: "requests", retryAfter: Duration.millis(7000) }
          ],
          [
            "Retry-After as an HTTP date",
            Fake.error(429, { message: "Too many requests", code: "rate_limit_exceeded" }, { "retry-after": Fake.httpDate(now + 10_000) }),
            { limit: "requests", retryAfter: Duration.millis(10_000) }
          ],
          [
            "retry-after-ms",
            Fake.error(429, { message: "Slow down", code: "rate_limit_exceeded" }, { "retry-after-ms": "1500", "retry-after": "2" }),
            { limit: "requests", retryAfter: Duration.millis(1500) }
          ],
          [
            "OpenAI's x-ratelimit-* only (the reset of the exhausted window)",
            Fake.error(429, {
              message: "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM): Limit 30000, Used 30000, Requested 500.",
              type: "tokens",
              code: "rate_limit_exceeded"
            }, Fake.openAiHeaders({ limit: 500, remaining: 499, resetMillis: 120 }, { limit: 30_000, remaining: 0, resetMillis: 12 })),
            { limit: "tokens", retryAfter: Duration.millis(12) }
          ],
          [
            "Azure OpenAI",
            Fake.raw(429, errorJson({
              code: "429",
              message: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-01-preview have exceeded token rate limit of your current AIServices S0 pricing tier. Please retry after 37 seconds."
            }), { headers: { ...json, "retry-after-ms": "37000", "retry-after": "37", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-remaining-requests": "119" } }),
            { limit: "tokens", retryAfter: Duration.millis(37_000) }
          ],
          [
            "Anthropic",
            Fake.raw(429, JSON.stringify({
              type: "error",
              error: { type: "rate_limit_error", message: "This request would exceed your organization's rate limit of 80,000 input tokens per minute." }
            }), {
              headers: {
                ...json,
                "retry-after": "30",
                ...Fake.anthropicHeaders(now, {
                  requests: { limit: 50, remaining: 49, resetMillis: 1000 },
                  inputTokens: { limit: 80_000, remaining: 0, resetMillis: 30_000 },
                  outputTokens: { limit: 16_000, remaining: 16_000, resetMillis: 0 }
                })
              }
            }),
            { limit: "inputTokens", retryAfter: Duration.millis(30_000) }
          ]
        ]
        for (const [name, reply, expected] of cases) {
          yield* fake.script(reply)
          const error = yield* fails(model)
          expect(error._tag, name).toBe("RateLimited")
          expect(error, name).toMatchObject({ model: "test-model", ...expected })
          expect(AiModel.isTransient(error)).toBe(true)
        }
        // every 429 above that sent x-ratelimit headers carried them in the error
        yield* fake.script(Fake.error(429, { message: "x", code: "rate_limit_exceeded" }, Fake.openAiHeaders(
          { limit: 10, remaining: 0, resetMillis: 2000 },
          { limit: 100, remaining: 50, resetMillis: 100 }
        )))
        expect(yield* fails(model)).toStrictEqual(new AiModel.RateLimited({
          model: "test-model",
          limit: "requests",
          retryAfter: Duration.millis(2000),
          rateLimits: new AiModel.RateLimits({
            requests: new AiModel.RateLimitWindow({ limit: 10, remaining: 0, reset: Duration.millis(2000) }),
            tokens: new AiModel.RateLimitWindow({ limit: 100, remaining: 50, reset: Duration.millis(100) })
          })
        }))
      }))

    it.scoped("a 429 whose body says insufficient_quota is QuotaExhausted (permanent), as is a 402 and Azure's quota 403", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.error(429, { message: "You exceeded your current quota, please check your plan and billing details.", type: "insufficient_quota", code: "insufficient_quota" }),
          Fake.error(402, { message: "Insufficient credits" }),
          Fake.raw(403, JSON.stringify({ statusCode: 403, message: "Out of call volume quota. Quota will be replenished in 2.12:00:00." }), { headers: json })
        )
        for (let i = 0; i < 3; i++) {
          const error = yield* fails(model)
          expect(error._tag).toBe("QuotaExhausted")
          expect(AiModel.isPermanent(error)).toBe(true)
        }
      }))

    it.scoped("500 and 502 are ProviderError (transient), 503 with Retry-After and 529 are Overloaded", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.error(500, { message: "The server had an error while processing your request. Sorry about that!", type: "server_error" }),
          Fake.htmlPage(502, "502 Bad Gateway"),
          Fake.error(503, { message: "The engine is currently overloaded, please try again later", type: "server_error" }, { "retry-after": "4" }),
          Fake.raw(529, JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }), { headers: json })
        )
        expect(yield* fails(model)).toStrictEqual(new AiModel.ProviderError({
          model: "test-model",
          status: 500,
          reason: "The server had an error while processing your request. Sorry about that! (server_error)"
        }))
        expect(yield* fails(model)).toStrictEqual(new AiModel.ProviderError({ model: "test-model", status: 502, reason: "an HTML page: 502 Bad Gateway" }))
        expect(yield* fails(model)).toStrictEqual(new AiModel.Overloaded({ model: "test-model", retryAfter: Duration.millis(4000) }))
        expect(yield* fails(model)).toStrictEqual(new AiModel.Overloaded({ model: "test-model" }))
      }))

    it.scoped("408 is ModelTimeout", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.error(408, { message: "Request timed out" }))
        expect(yield* fails(model)).toMatchObject({ _tag: "ModelTimeout", model: "test-model" })
      }))

    it.scoped("pitfall: a 400 'prompt too long' is InvalidRequest with contextLengthExceeded, in OpenAI's, vLLM's, llama.cpp's and Anthropic's words", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.error(400, {
            message: "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. Please reduce the length of the messages.",
            type: "invalid_request_error",
            code: "context_length_exceeded"
          }),
          Fake.raw(400, JSON.stringify({
            object: "error",
            message: "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).",
            type: "BadRequestError",
            param: null,
            code: 400
          }), { headers: json }),
          Fake.raw(400, errorJson({ code: 400, message: "the request exceeds the available context size, try increasing it", type: "exceed_context_size_error" }), { headers: json }),
          Fake.raw(400, JSON.stringify({ type: "error", error: { type: "invalid_request_error", message: "prompt is too long: 210000 tokens > 200000 maximum" } }), { headers: json })
        )
        for (let i = 0; i < 4; i++) {
          const error = yield* fails(model)
          expect(error).toMatchObject({ _tag: "InvalidRequest", contextLengthExceeded: true })
          expect((error as AiModel.InvalidRequest).reason).toMatch(/^the prompt does not fit the model's context window: /)
          expect(AiModel.isPermanent(error)).toBe(true)
        }
      }))

    it.scoped("404 (Ollama's unknown model), 413 and 422 are InvalidRequest without the context flag", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.raw(404, JSON.stringify({ error: "model \"llama9\" not found, try pulling it first" }), { headers: json }),
          Fake.error(413, { message: "Request Entity Too Large" }),
          Fake.error(422, { message: "temperature: Input should be less than or equal to 2", type: "invalid_request_error" })
        )
        expect(yield* fails(model)).toStrictEqual(
          new AiModel.InvalidRequest({ model: "test-model", reason: "model \"llama9\" not found, try pulling it first" })
        )
        expect(yield* fails(model)).toMatchObject({ _tag: "InvalidRequest", reason: "Request Entity Too Large (error)" })
        expect(yield* fails(model)).toMatchObject({ _tag: "InvalidRequest", reason: "temperature: Input should be less than or equal to 2 (invalid_request_error)" })
      }))

    it.scoped("401 and 403 are AuthenticationFailed (permanent) and never echo the key, even when the server does", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.error(401, { message: `Incorrect API key provided: ${key}. You can find your API key at https://platform.openai.com/account/api-keys.`, type: "invalid_request_error", code: "invalid_api_key" }),
          Fake.error(401, { message: `Incorrect API key provided: sk-wiz-t***8091.`, code: "invalid_api_key" }),
          Fake.raw(403, `Forbidden for Bearer ${key}`, { headers: { "content-type": "text/plain" } })
        )
        const errors = [yield* fails(model), yield* fails(model), yield* fails(model)]
        expect(errors.map((e) => [e._tag, (e as AiModel.AuthenticationFailed).status])).toStrictEqual([
          ["AuthenticationFailed", 401],
          ["AuthenticationFailed", 401],
          ["AuthenticationFailed", 403]
        ])
        for (const error of errors) {
          expect(AiModel.isPermanent(error)).toBe(true)
          const everything = `${error.message} ${JSON.stringify(error)}`
          expect(everything).not.toContain(key)
          expect(everything).not.toContain(key.slice(-12))
        }
        expect(errors[0]!.message).toBe(
          "test-model: authentication failed (HTTP 401): the API key was not accepted: Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys. (invalid_api_key)"
        )
      }))

    it.scoped("x-should-retry overrides the status's class, as openai-node lets it", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.error(400, { message: "try again" }, { "x-should-retry": "true" }),
          Fake.error(500, { message: "this will not work" }, { "x-should-retry": "false" }),
          Fake.error(500, { message: "agreed" }, { "x-should-retry": "true" })
        )
        const retry = yield* fails(model)
        expect(retry).toMatchObject({ _tag: "ProviderError", status: 400, retryable: true })
        expect(AiModel.isTransient(retry)).toBe(true)
        const stop = yield* fails(model)
        expect(stop).toMatchObject({ _tag: "ProviderError", status: 500, retryable: false })
        expect(AiModel.isPermanent(stop)).toBe(true)
        expect(yield* fails(model)).toStrictEqual(new AiModel.ProviderError({ model: "test-model", status: 500, reason: "agreed (error)" }))
      }))

    it.scoped("transport: a refused connection and a dropped one are Unavailable", () =>
      Effect.gen(function*() {
        const port = yield* Fake.closedPort
        const refused = yield* OpenAiCompatible.make({ baseUrl: `http://127.0.0.1:${port}/v1`, model: "m" })
        expect(yield* fails(refused)).toMatchObject({ _tag: "Unavailable", model: "m" })
        expect(((yield* fails(refused)) as AiModel.Unavailable).reason).toMatch(/ECONNREFUSED/)
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.drop, Fake.drop)
        expect(yield* fails(model)).toMatchObject({ _tag: "Unavailable" })
        expect(yield* Effect.flip(collect(model.stream(request)))).toMatchObject({ _tag: "Unavailable" })
      }))

    it.scoped("malformed answers: not JSON, an HTML page with status 200, no choices, a bad event: MalformedResponse", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.raw(200, "{\"choices\": [", { headers: json }),
          Fake.raw(200, "<html><head><title>Sign in to the corporate proxy</title></head></html>", { headers: { "content-type": "text/html" } }),
          Fake.raw(200, "{\"object\":\"chat.completion\"}", { headers: json }),
          Fake.raw(200, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {oops\n\n", { headers: { "content-type": "text/event-stream" } }),
          Fake.raw(200, "<html><head><title>Gateway login</title></head></html>", { headers: { "content-type": "text/html" } })
        )
        expect(yield* fails(model)).toStrictEqual(new AiModel.MalformedResponse({ model: "test-model", reason: "the body is not JSON: \"{\\\"choices\\\": [\"" }))
        expect(yield* fails(model)).toStrictEqual(
          new AiModel.MalformedResponse({ model: "test-model", reason: "expected JSON, got an HTML page: Sign in to the corporate proxy" })
        )
        expect(yield* fails(model)).toStrictEqual(new AiModel.MalformedResponse({ model: "test-model", reason: "the completion has no choices" }))
        expect(yield* Effect.flip(collect(model.stream(request)))).toStrictEqual(
          new AiModel.MalformedResponse({ model: "test-model", reason: "an event is not JSON: \"{oops\"" })
        )
        expect(yield* Effect.flip(collect(model.stream(request)))).toStrictEqual(
          new AiModel.MalformedResponse({ model: "test-model", reason: "expected an event stream, got an HTML page: Gateway login" })
        )
      }))

    it.scoped("an error inside a 200's JSON is classified like a status would be", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.raw(200, errorJson({ message: "quota", type: "insufficient_quota" }), { headers: json }))
        expect(yield* fails(model)).toMatchObject({ _tag: "QuotaExhausted" })
      }))
  })

  describe("streams that go wrong", () => {
    it.scoped("pitfall: a stream that ends without [DONE] is IncompleteStream with the partial text, not a success", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.answer({ text: "cut short here", done: false }), Fake.answer({ text: "cut short here", done: false }))
        const error = yield* Effect.flip(collect(model.stream(request)))
        expect(error).toStrictEqual(new AiModel.IncompleteStream({ model: "test-model", partial: "cut short here", reason: "the event stream ended without [DONE]" }))
        // and AiModel.collect over it keeps the same error
        expect(yield* Effect.flip(AiModel.collect("test-model", model.stream(request)))).toStrictEqual(error)
      }))

    it.scoped("an error event after a 200: a server_error is IncompleteStream with the text so far; rate_limit and overloaded keep their types", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.answer({ text: "one two three four", errorAfter: { chunks: 2, error: { message: "The server had an error while processing your request.", type: "server_error" } } }),
          Fake.answer({ text: "a b", errorAfter: { chunks: 1, error: { type: "overloaded_error", message: "Overloaded" }, asEvent: true } }),
          Fake.answer({ text: "a b", errorAfter: { chunks: 0, error: { message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" } } })
        )
        expect(yield* Effect.flip(collect(model.stream(request)))).toStrictEqual(new AiModel.IncompleteStream({
          model: "test-model",
          partial: "one two",
          reason: "the provider sent an error event: The server had an error while processing your request. (server_error)"
        }))
        expect(yield* Effect.flip(collect(model.stream(request)))).toStrictEqual(new AiModel.Overloaded({ model: "test-model" }))
        expect(yield* Effect.flip(collect(model.stream(request)))).toMatchObject({ _tag: "RateLimited", limit: "requests" })
      }))

    it.scoped("a connection dropped mid-stream is IncompleteStream with what arrived", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.answer({ text: "alpha beta gamma", dropAfter: 2 }))
        const error = yield* Effect.flip(collect(model.stream(request)))
        expect(error).toMatchObject({ _tag: "IncompleteStream", partial: "alpha beta" })
      }))

    it.scoped("a consumer that stops early (take, interruption) ends the call at once, though the server would go on for an hour", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const slow = Fake.answer({ text: "alpha beta gamma", between: "1 hour" })
        yield* fake.script(slow, slow, Fake.answer({ text: "after" }))
        expect(text(yield* collect(Stream.take(model.stream(request), 1)))).toBe("alpha")
        const reader = yield* Effect.fork(collect(model.stream(request)))
        yield* fake.received(2)
        yield* Fiber.interrupt(reader)
        expect(text(yield* collect(model.stream(request)))).toBe("after")
      }))
  })

  describe("limits against a hostile or broken server", () => {
    it.scoped("a body past maxResponseBytes is MalformedResponse, with a content-length (not read at all) or chunked", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxResponseBytes: 1000 })
        const big = JSON.stringify({ choices: [{ message: { content: "x".repeat(5000) }, finish_reason: "stop" }] })
        yield* fake.script(Fake.raw(200, big, { headers: json }), Fake.raw(200, big, { headers: json, chunked: true, split: 300 }))
        const tooLarge = new AiModel.MalformedResponse({ model: "test-model", reason: "the response body is larger than 1000 bytes" })
        expect(yield* Effect.flip(model.generate(request))).toStrictEqual(tooLarge)
        expect(yield* Effect.flip(model.generate(request))).toStrictEqual(tooLarge)
      }))

    it.scoped("an event-stream line past maxLineLength, and a stream past maxResponseBytes, are MalformedResponse", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxLineLength: 500, maxResponseBytes: 4000 })
        yield* fake.script(
          Fake.answer({ text: "y".repeat(1000), pieces: ["y".repeat(1000)], split: 100 }),
          Fake.answer({ text: "many words ".repeat(100) })
        )
        expect(yield* Effect.flip(collect(model.stream(request)))).toStrictEqual(
          new AiModel.MalformedResponse({ model: "test-model", reason: "an event-stream line is longer than 500 characters" })
        )
        expect(yield* Effect.flip(collect(model.stream(request)))).toStrictEqual(
          new AiModel.MalformedResponse({ model: "test-model", reason: "the event stream is larger than 4000 bytes" })
        )
      }))

    it.scoped("a redirect to the same host is followed with the key; one to another host is refused and the other host gets nothing", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const elsewhere = yield* Fake.make({ host: "localhost" })
        yield* fake.script(Fake.redirect(`${fake.origin}/v1/chat/completions?moved=1`), Fake.answer({ text: "after the move" }))
        expect((yield* model.generate(request)).text).toBe("after the move")
        const [, moved] = yield* fake.requests
        expect(moved!.path).toBe("/v1/chat/completions?moved=1")
        expect(moved!.headers["authorization"]).toBe(`Bearer ${key}`)

        yield* fake.script(Fake.redirect(`${elsewhere.url}/chat/completions`, 302))
        expect(yield* Effect.flip(model.generate(request))).toStrictEqual(new AiModel.ProviderError({
          model: "test-model",
          status: 302,
          reason: `redirected to another host (${elsewhere.origin}); not followed, so the API key stays with ${fake.origin}`
        }))
        expect(yield* elsewhere.requests).toStrictEqual([])
      }))

    it.scoped("a redirect loop stops at maxRedirects", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxRedirects: 2 })
        const loop = Fake.redirect(`${fake.url}/chat/completions`)
        yield* fake.script(loop, loop, loop, loop)
        expect(yield* Effect.flip(model.generate(request))).toMatchObject({ _tag: "ProviderError", status: 307, reason: "more than 2 redirects" })
        expect((yield* fake.requests).length).toBe(3)
      }))

    it.scoped("a stall: generate times out at requestTimeout on the Clock", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ requestTimeout: "30 seconds" })
        yield* fake.script(Fake.stall())
        const fiber = yield* Effect.fork(model.generate(request))
        yield* fake.received(1)
        yield* awaitTimer("30 seconds")
        yield* TestClock.adjust("30 seconds")
        expect(yield* Fiber.await(fiber)).toStrictEqual(Exit.fail(new AiModel.ModelTimeout({ model: "test-model", timeout: Duration.seconds(30) })))
      }))

    it.scoped("a stall before the head of a stream times out at connectTimeout; after the head, at firstByteTimeout", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ connectTimeout: "5 seconds", firstByteTimeout: "20 seconds" })
        yield* fake.script(Fake.stall(false), Fake.stall(true))
        const beforeHead = yield* Effect.fork(collect(model.stream(request)))
        yield* awaitTimer("5 seconds")
        yield* TestClock.adjust("5 seconds")
        expect(yield* Fiber.await(beforeHead)).toStrictEqual(Exit.fail(new AiModel.ModelTimeout({ model: "test-model", timeout: Duration.seconds(5) })))
        // One watchdog times the whole call: it wakes at the head's deadline, finds the head in
        // and the first byte awaited, and sleeps on to the first byte's.
        const afterHead = yield* Effect.fork(collect(model.stream(request)))
        yield* fake.received(2)
        yield* awaitTimer("5 seconds")
        yield* TestClock.adjust("5 seconds")
        yield* awaitTimer("15 seconds")
        expect(Option.isNone(yield* Fiber.poll(afterHead))).toBe(true)
        yield* TestClock.adjust("15 seconds")
        expect(yield* Fiber.await(afterHead)).toStrictEqual(Exit.fail(new AiModel.ModelTimeout({ model: "test-model", timeout: Duration.seconds(20) })))
      }))

    it.scoped("a firstByteTimeout shorter than connectTimeout still fires on time", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ connectTimeout: "30 seconds", firstByteTimeout: "2 seconds" })
        yield* fake.script(Fake.stall(true))
        const afterHead = yield* Effect.fork(collect(model.stream(request)))
        yield* awaitTimer("2 seconds")
        yield* TestClock.adjust("2 seconds")
        expect(yield* Fiber.await(afterHead)).toStrictEqual(Exit.fail(new AiModel.ModelTimeout({ model: "test-model", timeout: Duration.seconds(2) })))
      }))

    it.scoped("a slow first token within firstByteTimeout is fine; beyond it, ModelTimeout; then a silence past idleTimeout", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ firstByteTimeout: "10 seconds", idleTimeout: "3 seconds" })
        yield* fake.script(
          Fake.answer({ text: "slow but fine", firstTokenAfter: "8 seconds" }),
          Fake.answer({ text: "too slow", firstTokenAfter: "15 seconds" }),
          Fake.answer({ text: "then silent forever", between: "1 hour" })
        )
        const slow = yield* Effect.fork(collect(model.stream(request)))
        yield* awaitTimer("10 seconds")
        yield* awaitTimer("8 seconds")
        yield* TestClock.adjust("8 seconds")
        expect(text(yield* Fiber.join(slow))).toBe("slow but fine")

        const tooSlow = yield* Effect.fork(collect(model.stream(request)))
        yield* awaitTimer("10 seconds")
        yield* TestClock.adjust("10 seconds")
        expect(yield* Fiber.await(tooSlow)).toStrictEqual(Exit.fail(new AiModel.ModelTimeout({ model: "test-model", timeout: Duration.seconds(10) })))

        const silent = yield* Effect.fork(collect(model.stream(request)))
        yield* awaitTimer("3 seconds")
        yield* TestClock.adjust("3 seconds")
        expect(yield* Fiber.await(silent)).toStrictEqual(Exit.fail(new AiModel.ModelTimeout({ model: "test-model", timeout: Duration.seconds(3) })))
      }))
  })

  describe("tracing", () => {
    // A span of Effect's default tracer is recorded nowhere, so the client's span (and the
    // `traceparent` header it sends) is made only under a tracer that records spans.
    it.scoped("the client's span and traceparent header only under a tracer that records spans", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const names: Array<string> = []
        const native = yield* Effect.tracer
        const recording = Tracer.make({
          span: (name, parent, context, links, startTime, kind) => {
            names.push(name)
            return native.span(name, parent, context, links, startTime, kind)
          },
          context: (f) => f()
        })
        yield* model.generate(request)
        yield* collect(model.stream(request))
        yield* model.generate(request).pipe(Effect.withTracer(recording))
        yield* collect(model.stream(request)).pipe(Effect.withTracer(recording))
        const sent = yield* fake.requests
        expect(sent.map((r) => r.headers["traceparent"] !== undefined)).toStrictEqual([false, false, true, true])
        expect(names.filter((name) => name.startsWith("http.client")).length).toBe(2)
      }))
  })

  describe("configuration", () => {
    it.effect("an invalid baseUrl, model or limit is a ConfigError", () =>
      Effect.gen(function*() {
        const bad = (options: Partial<OpenAiCompatible.Options>) =>
          Effect.flip(OpenAiCompatible.make({ baseUrl: "http://127.0.0.1:1/v1", model: "m", ...options }))
        expect(String(yield* bad({ baseUrl: "not a url" }))).toMatch(/baseUrl/)
        expect(String(yield* bad({ baseUrl: "ftp://example.com/v1" }))).toMatch(/not an http\(s\) URL/)
        expect(String(yield* bad({ model: " " }))).toMatch(/model/)
        expect(String(yield* bad({ maxResponseBytes: 0 }))).toMatch(/maxResponseBytes/)
      }))

    it.scoped("layerConfig reads every option from Config, the key as a Redacted", () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make()
        const model = yield* AiModel.AiModel.pipe(
          Effect.provide(
            OpenAiCompatible.layerConfig({
              baseUrl: Config.string("BASE_URL"),
              model: Config.string("MODEL"),
              apiKey: Config.redacted("API_KEY")
            }).pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([
              ["BASE_URL", fake.url],
              ["MODEL", "from-config"],
              ["API_KEY", key]
            ])))))
          )
        )
        expect(model.name).toBe("from-config")
        yield* model.generate(request)
        expect((yield* fake.requests)[0]!.headers["authorization"]).toBe(`Bearer ${key}`)
      }))
  })
})

describe("OpenAiCompatible on other HttpClient layers", () => {
  for (const [name, client] of [["NodeHttpClient.layer (node:http)", NodeHttpClient.layer], ["FetchHttpClient.layer", FetchHttpClient.layer]] as const) {
    it.scoped(`${name}: whole and streamed answers`, () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.answer({ text: "über fine" }), Fake.answer({ text: "über fine", split: 3 }))
        expect((yield* model.generate(request)).text).toBe("über fine")
        expect(text(yield* collect(model.stream(request)))).toBe("über fine")
      }).pipe(Effect.provide(client)))
  }
})

