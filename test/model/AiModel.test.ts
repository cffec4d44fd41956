import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Exit, Schema, Stream } from "effect"
import * as AiModel from "../../src/model/AiModel.js"

const request = new AiModel.CompletionRequest({ prompt: "Summarise: a b c.", maxTokens: 16 })
const usage = new AiModel.Usage({ promptTokens: 4, completionTokens: 3 })
const rateLimits = new AiModel.RateLimits({
  requests: new AiModel.RateLimitWindow({ limit: 500, remaining: 499, reset: Duration.millis(120) }),
  tokens: new AiModel.RateLimitWindow({ limit: 30_000, remaining: 29_000 })
})

describe("AiModel", () => {
  it.effect("make from generate: stream answers with one final chunk holding the whole completion", () =>
    Effect.gen(function*() {
      const model = AiModel.make({
        name: "whole",
        generate: () =>
          Effect.succeed(new AiModel.Completion({ text: "a b c", finishReason: "stop", usage, model: "whole", rateLimits }))
      })
      const chunks = Chunk.toReadonlyArray(yield* Stream.runCollect(model.stream(request)))
      expect(chunks).toStrictEqual([
        new AiModel.CompletionChunk({ delta: "a b c", finishReason: "stop", usage, rateLimits })
      ])
    }))

  it.effect("make from stream: generate joins the chunks, keeping finish reason, usage and rate limits", () =>
    Effect.gen(function*() {
      const model = AiModel.make({
        name: "streamed",
        stream: () =>
          Stream.make(
            new AiModel.CompletionChunk({ delta: "a" }),
            new AiModel.CompletionChunk({ delta: " b" }),
            new AiModel.CompletionChunk({ delta: " c", finishReason: "length", usage, rateLimits })
          )
      })
      expect(yield* model.generate(request)).toStrictEqual(
        new AiModel.Completion({ text: "a b c", finishReason: "length", usage, model: "streamed", rateLimits })
      )
    }))

  it.effect("pitfall: a stream that ends without its final chunk is not a success: IncompleteStream with the text so far", () =>
    Effect.gen(function*() {
      const model = AiModel.make({
        name: "cut",
        stream: () => Stream.make(new AiModel.CompletionChunk({ delta: "half an" }), new AiModel.CompletionChunk({ delta: " answer" }))
      })
      const exit = yield* Effect.exit(model.generate(request))
      expect(exit).toStrictEqual(
        Exit.fail(new AiModel.IncompleteStream({ model: "cut", partial: "half an answer", reason: "the stream ended without its final chunk" }))
      )
      const empty = AiModel.make({ name: "empty", stream: () => Stream.empty })
      const nothing = yield* Effect.flip(empty.generate(request))
      expect(nothing).toMatchObject({ _tag: "IncompleteStream", partial: "" })
    }))

  it("every model error encodes to JSON and decodes back with its schema (durations included)", () => {
    const errors: ReadonlyArray<AiModel.ModelError> = [
      new AiModel.RateLimited({ model: "m", limit: "inputTokens", retryAfter: Duration.millis(1500), rateLimits }),
      new AiModel.RateLimited({ model: "m", limit: "requests" }),
      new AiModel.Overloaded({ model: "m" }),
      new AiModel.Overloaded({ model: "m", retryAfter: Duration.seconds(2) }),
      new AiModel.ProviderError({ model: "m", status: 500, reason: "x", retryAfter: Duration.millis(250), retryable: false }),
      new AiModel.InvalidRequest({ model: "m", reason: "too long", contextLengthExceeded: true }),
      new AiModel.ModelTimeout({ model: "m", timeout: Duration.seconds(30) }),
      new AiModel.Unavailable({ model: "m", reason: "ECONNREFUSED" }),
      new AiModel.ProviderError({ model: "m", status: 502, reason: "bad gateway" }),
      new AiModel.IncompleteStream({ model: "m", partial: "so far", reason: "connection reset" }),
      new AiModel.InvalidRequest({ model: "m", reason: "prompt too long" }),
      new AiModel.QuotaExhausted({ model: "m", reason: "insufficient_quota" }),
      new AiModel.AuthenticationFailed({ model: "m", status: 401, reason: "invalid api key" }),
      new AiModel.MalformedResponse({ model: "m", reason: "not JSON" })
    ]
    const codec = Schema.parseJson(AiModel.ModelError)
    for (const error of errors) {
      const json = Schema.encodeSync(codec)(error)
      expect(typeof json).toBe("string")
      expect(Schema.decodeSync(codec)(json)).toStrictEqual(error)
    }
  })

  it("isTransient and isPermanent: only InvalidRequest, QuotaExhausted and AuthenticationFailed are permanent", () => {
    expect(AiModel.isTransient(new AiModel.ProviderError({ model: "m", status: 500, reason: "x" }))).toBe(true)
    expect(AiModel.isTransient(new AiModel.IncompleteStream({ model: "m", partial: "", reason: "x" }))).toBe(true)
    expect(AiModel.isTransient(new AiModel.AuthenticationFailed({ model: "m", status: 403, reason: "x" }))).toBe(false)
    expect(AiModel.isPermanent(new AiModel.QuotaExhausted({ model: "m", reason: "x" }))).toBe(true)
    expect(AiModel.isPermanent(new Error("plain"))).toBe(false)
    expect(AiModel.isPermanent("InvalidRequest")).toBe(false)
  })

  it("make says whether the model continues an answer: only when told so", () => {
    const generate = () => Effect.die("unused")
    expect(AiModel.make({ name: "m", generate }).supportsContinuation).toBeUndefined()
    expect(AiModel.make({ name: "m", generate, supportsContinuation: true }).supportsContinuation).toBe(true)
    expect(new AiModel.CompletionRequest({ prompt: "p", maxTokens: 1, continuation: "The" }).continuation).toBe("The")
  })

  it("x-should-retry: a ProviderError the provider marked retryable: false is permanent; true or unsaid stays transient", () => {
    const error = (retryable?: boolean) =>
      new AiModel.ProviderError({ model: "m", status: 500, reason: "x", ...(retryable === undefined ? {} : { retryable }) })
    expect(AiModel.isPermanent(error(false))).toBe(true)
    expect(AiModel.isTransient(error(false))).toBe(false)
    expect(AiModel.isTransient(error(true))).toBe(true)
    expect(AiModel.isTransient(error())).toBe(true)
    expect(new AiModel.Overloaded({ model: "m", retryAfter: Duration.seconds(3) }).message).toBe("m: overloaded, retry after 3s")
  })
})
