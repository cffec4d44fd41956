/**
 * `Gateway` over real HTTP on loopback, with the `openai` package as the client and a
 * FakeProvider upstream: answers through the gateway are the upstream's (a differential test),
 * streams are honest, back-pressure is a 429 with a real retry-after, and a client that goes
 * away cancels its upstream call.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Stream } from "effect"
import type OpenAI from "openai"
import * as AiModel from "../../src/model/AiModel.js"
import * as Fake from "../support/FakeProvider.js"
import { serve } from "./serve.js"

const messages: Array<OpenAI.Chat.Completions.ChatCompletionMessageParam> = [
  { role: "system", content: "Answer in one line." },
  { role: "user", content: "Summarise: Effect is a TypeScript library." }
]

const collect = (stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>) =>
  Effect.promise(async () => {
    let text = ""
    let finishReason: string | null = null
    let usage: OpenAI.CompletionUsage | undefined
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? ""
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason
      if (chunk.usage) usage = chunk.usage
    }
    return { text, finishReason, usage }
  })

/** The error a promise fails with, or a test failure when it succeeds. */
const failure = <A>(promise: () => Promise<A>) =>
  Effect.flatMap(Effect.either(Effect.tryPromise({ try: promise, catch: (error) => error })), (either) =>
    either._tag === "Left" ? Effect.succeed(either.left as any) : Effect.dieMessage(`expected a failure, got ${JSON.stringify(either.right)}`))

describe("Gateway", () => {
  it.scopedLive("differential: a whole answer through the gateway is the upstream's own, and the upstream gets the same request", () =>
    Effect.gen(function*() {
      const { client, direct, fake } = yield* serve()
      const viaGateway = yield* Effect.promise(() =>
        client().chat.completions.create({ model: "fake", messages, max_tokens: 40, temperature: 0.3 })
      )
      const viaUpstream = yield* Effect.promise(() =>
        direct.chat.completions.create({ model: "fake", messages, max_tokens: 40, temperature: 0.3 })
      )
      expect(viaGateway.choices[0]!.message.content).toBe(viaUpstream.choices[0]!.message.content)
      expect(viaGateway.choices[0]!.message.content!.length).toBeGreaterThan(0)
      expect(viaGateway.choices[0]!.finish_reason).toBe(viaUpstream.choices[0]!.finish_reason)
      expect(viaGateway.usage).toMatchObject({
        prompt_tokens: viaUpstream.usage!.prompt_tokens,
        completion_tokens: viaUpstream.usage!.completion_tokens
      })
      const [sentByGateway, sentDirect] = (yield* fake.requests).map((r) => r.body as Record<string, unknown>)
      expect(sentByGateway!["messages"]).toStrictEqual(sentDirect!["messages"])
      expect(sentByGateway!["temperature"]).toBe(0.3)
      expect(sentByGateway!["max_tokens"]).toBe(40)
    }))

  it.scopedLive("differential: a streamed answer through the gateway is the upstream's own, usage included", () =>
    Effect.gen(function*() {
      const { client, direct } = yield* serve()
      const params = { model: "fake", messages, max_tokens: 40, stream: true, stream_options: { include_usage: true } } as const
      const viaGateway = yield* collect(yield* Effect.promise(() => client().chat.completions.create(params)))
      const viaUpstream = yield* collect(yield* Effect.promise(() => direct.chat.completions.create(params)))
      expect(viaGateway.text).toBe(viaUpstream.text)
      expect(viaGateway.text.length).toBeGreaterThan(0)
      expect(viaGateway.finishReason).toBe(viaUpstream.finishReason)
      expect(viaGateway.usage).toMatchObject({ prompt_tokens: viaUpstream.usage!.prompt_tokens, completion_tokens: viaUpstream.usage!.completion_tokens })
    }))

  it.scopedLive("a stream whose upstream fails before its first chunk is retried: the client sees only the answer", () =>
    Effect.gen(function*() {
      const { client, fake } = yield* serve()
      yield* fake.script(Fake.error(503, { message: "overloaded" }), Fake.answer({ text: "second time lucky" }))
      const answer = yield* collect(yield* Effect.promise(() => client().chat.completions.create({ model: "fake", messages, stream: true })))
      expect(answer).toMatchObject({ text: "second time lucky", finishReason: "stop" })
      expect((yield* fake.requests).length).toBe(2)
    }))

  it.scopedLive("a stream cut mid-answer ends with an SSE error in OpenAI's shape, never a clean finish_reason stop (LiteLLM #36768, Portkey #1047)", () =>
    Effect.gen(function*() {
      const { client, fake, origin } = yield* serve()
      yield* fake.script(Fake.answer({ text: "one two three four", pieces: ["one ", "two ", "three ", "four"], dropAfter: 2 }))
      const raw = yield* Effect.promise(() =>
        fetch(`${origin}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "fake", messages, stream: true })
        }).then(async (response) => ({ status: response.status, text: await response.text() }))
      )
      expect(raw.status).toBe(200)
      expect(raw.text).toContain(`"content":"one "`)
      expect(raw.text).toMatch(/data: \{"error":\{"message":"[^"]+","type":"server_error","param":null,"code":"incomplete_stream"\}\}/)
      expect(raw.text).not.toContain(`"finish_reason":"stop"`)
      expect(raw.text).not.toContain("[DONE]")
      // and the openai client throws rather than returning a short answer
      yield* fake.script(Fake.answer({ text: "one two three four", pieces: ["one ", "two ", "three ", "four"], dropAfter: 2 }))
      const error = yield* failure(async () => {
        for await (const _ of await client().chat.completions.create({ model: "fake", messages, stream: true })) {
          // read to the end
        }
      })
      expect(String(error.message)).toMatch(/stream/i)
    }))

  it.scopedLive("a cut stream is continued by the agent when stream.continue is on: the client gets the whole answer", () =>
    Effect.gen(function*() {
      // a model that breaks once after "one ", then continues from what was delivered
      let calls = 0
      const model = AiModel.make({
        name: "m",
        supportsContinuation: true,
        stream: (request) => {
          calls++
          const usage = new AiModel.Usage({ promptTokens: 3, completionTokens: 4 })
          if (request.continuation === undefined) {
            return Stream.concat(
              Stream.make(new AiModel.CompletionChunk({ delta: "one " })),
              Stream.fail(new AiModel.Unavailable({ model: "m", reason: "connection reset" }))
            )
          }
          return Stream.make(new AiModel.CompletionChunk({ delta: "two", finishReason: "stop", usage }))
        }
      })
      const { client } = yield* serve({ model, agent: { stream: { continue: true } } })
      const answer = yield* collect(yield* Effect.promise(() => client().chat.completions.create({ model: "m", messages, stream: true })))
      expect(answer).toMatchObject({ text: "one two", finishReason: "stop" })
      expect(calls).toBe(2)
    }))

  it.scopedLive("every tier failing before the first chunk is an HTTP error with the provider's retry-after, not a 200 (LiteLLM #38610)", () =>
    Effect.gen(function*() {
      const { fake, origin } = yield* serve({ agent: { retry: false } })
      yield* fake.script(Fake.error(429, { message: "slow down", type: "requests" }, { "retry-after": "7" }))
      const response = yield* Effect.promise(() =>
        fetch(`${origin}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "fake", messages, stream: true })
        })
      )
      expect(response.status).toBe(429)
      expect(response.headers.get("retry-after")).toBe("7")
      expect(yield* Effect.promise(() => response.json())).toMatchObject({ error: { type: "rate_limit_exceeded", code: "upstream_rate_limited" } })
    }))

  it.scopedLive("GET /v1/models, /healthz and /metrics; an unknown route is a 404 in OpenAI's error shape", () =>
    Effect.gen(function*() {
      const { client, origin } = yield* serve({ gateway: { models: ["fake"] } })
      const models = yield* Effect.promise(() => client().models.list())
      expect(models.data.map((m) => m.id)).toStrictEqual(["fake"])
      yield* Effect.promise(() => client().chat.completions.create({ model: "fake", messages }))
      const health = yield* Effect.promise(() => fetch(`${origin}/healthz`).then((r) => r.json()))
      expect(health).toStrictEqual({ status: "ok" })
      const metrics = yield* Effect.promise(() => fetch(`${origin}/metrics`).then((r) => r.text()))
      expect(metrics).toContain("# TYPE wiz_tasks_total counter")
      expect(metrics).toMatch(/wiz_gateway_requests_total\{route="chat",status="200"\} \d+/)
      expect(metrics).toContain("wiz_gateway_request_duration_ms_bucket{le=\"+Inf\"}")
      const missing = yield* Effect.promise(() => fetch(`${origin}/v2/nothing`).then(async (r) => ({ status: r.status, body: await r.json() })))
      expect(missing).toMatchObject({ status: 404, body: { error: { code: "not_found" } } })
      const unknownModel = yield* failure(() => client().chat.completions.create({ model: "gpt-9", messages }))
      expect(unknownModel.status).toBe(404)
    }))

  it.scopedLive("a client that disconnects interrupts its upstream call", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const model = AiModel.make({
        name: "m",
        generate: () =>
          Effect.zipRight(Deferred.succeed(started, undefined), Effect.never).pipe(
            Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
          )
      })
      const { origin } = yield* serve({ model })
      const abort = new AbortController()
      const request = yield* Effect.fork(Effect.promise(() =>
        fetch(`${origin}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "m", messages }),
          signal: abort.signal
        }).catch((error) => error)
      ))
      yield* Deferred.await(started)
      abort.abort()
      yield* Fiber.join(request)
      yield* Deferred.await(interrupted).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("upstream call not interrupted") }))
    }))

  it.scopedLive("a client that disconnects from a coalesced call leaves it running for the client that shares it", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      let calls = 0
      let interrupted = false
      const model = AiModel.make({
        name: "m",
        generate: (request) =>
          Effect.sync(() => calls++).pipe(
            Effect.zipRight(Deferred.await(gate)),
            Effect.as(
              new AiModel.Completion({
                text: `shared answer to ${request.prompt}`,
                finishReason: "stop",
                usage: new AiModel.Usage({ promptTokens: 2, completionTokens: 4 }),
                model: "m"
              })
            ),
            Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
          )
      })
      const { origin } = yield* serve({ model, agent: { coalesce: true } })
      const ask = (signal?: AbortSignal) =>
        fetch(`${origin}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "m", messages }),
          ...(signal === undefined ? {} : { signal })
        })
      const abort = new AbortController()
      const leaving = yield* Effect.fork(Effect.promise(() => ask(abort.signal).catch((error) => error)))
      const staying = yield* Effect.fork(Effect.promise(() => ask().then((r) => r.json() as Promise<any>)))
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
      abort.abort()
      yield* Fiber.join(leaving)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
      yield* Deferred.succeed(gate, undefined)
      const answer = yield* Fiber.join(staying)
      expect(answer.choices[0].message.content).toMatch(/^shared answer to /)
      expect(calls).toBe(1)
      expect(interrupted).toBe(false)
    }))

  it.scopedLive("a 200 stream holding only an error event falls back to the next tier (Portkey #1047, LiteLLM #36768); when every tier fails so, the client gets an HTTP error, not a 200 (LiteLLM #38610)", () =>
    Effect.gen(function*() {
      let fallbackCalls = 0
      const usage = new AiModel.Usage({ promptTokens: 2, completionTokens: 2 })
      const fallback = AiModel.make({
        name: "backup",
        stream: () =>
          Stream.suspend(() => {
            fallbackCalls++
            return fallbackCalls === 1
              ? Stream.make(new AiModel.CompletionChunk({ delta: "from the backup", finishReason: "stop", usage }))
              : Stream.fail(new AiModel.Overloaded({ model: "backup" }))
          })
      })
      const { client, fake, origin } = yield* serve({ agent: { retry: false, fallback: { models: [fallback] } } })
      const onlyAnError = Fake.answer({ text: "never", errorAfter: { chunks: 0, error: { message: "response.failed", type: "server_error" } } })
      yield* fake.script(onlyAnError)
      const answer = yield* collect(yield* Effect.promise(() => client().chat.completions.create({ model: "fake", messages, stream: true })))
      expect(answer).toMatchObject({ text: "from the backup", finishReason: "stop" })
      yield* fake.script(onlyAnError)
      const response = yield* Effect.promise(() =>
        fetch(`${origin}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "fake", messages, stream: true })
        }).then(async (r) => ({ status: r.status, text: await r.text() }))
      )
      expect(response.status).toBe(503)
      expect(response.text).not.toContain("finish_reason")
      expect(JSON.parse(response.text)).toMatchObject({ error: { code: "upstream_overloaded" } })
    }))

  it.scopedLive("every chunk of a stream names the model that answered it, the fallback tier when the primary failed, as a whole answer does", () =>
    Effect.gen(function*() {
      const usage = new AiModel.Usage({ promptTokens: 2, completionTokens: 3 })
      const fallback = AiModel.make({
        name: "backup",
        stream: () =>
          Stream.make(
            new AiModel.CompletionChunk({ delta: "from " }),
            new AiModel.CompletionChunk({ delta: "the backup", finishReason: "stop", usage })
          )
      })
      const { client, fake } = yield* serve({ agent: { retry: false, fallback: { models: [fallback] } } })
      const modelsOf = (stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>) =>
        Effect.promise(async () => {
          const models: Array<string> = []
          for await (const chunk of stream) models.push(chunk.model)
          return models
        })
      const params = { model: "fake", messages, stream: true, stream_options: { include_usage: true } } as const
      const fromPrimary = yield* modelsOf(yield* Effect.promise(() => client().chat.completions.create(params)))
      expect(fromPrimary.length).toBeGreaterThan(2)
      expect(new Set(fromPrimary)).toStrictEqual(new Set(["fake"]))
      const down = Fake.error(503, { message: "overloaded", type: "server_error" })
      yield* fake.script(down)
      const fromFallback = yield* modelsOf(yield* Effect.promise(() => client().chat.completions.create(params)))
      // the role chunk, two text chunks, the finish and the usage: every one names the tier that answered
      expect(fromFallback).toStrictEqual(["backup", "backup", "backup", "backup"])
      yield* fake.script(down)
      const whole = yield* Effect.promise(() => client().chat.completions.create({ model: "fake", messages }))
      expect(whole.model).toBe("backup")
    }))

  it.scopedLive("a client that disconnects mid-stream interrupts its upstream stream", () =>
    Effect.gen(function*() {
      const ended = yield* Deferred.make<void>()
      const model = AiModel.make({
        name: "m",
        stream: () =>
          Stream.concat(Stream.make(new AiModel.CompletionChunk({ delta: "first words " })), Stream.never).pipe(
            Stream.ensuring(Deferred.succeed(ended, undefined))
          )
      })
      const { origin } = yield* serve({ model })
      const abort = new AbortController()
      const firstBytes = yield* Effect.promise(async () => {
        const response = await fetch(`${origin}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "m", messages, stream: true }),
          signal: abort.signal
        })
        const { value } = await response.body!.getReader().read()
        return new TextDecoder().decode(value)
      })
      expect(firstBytes).toContain("first words")
      abort.abort()
      yield* Deferred.await(ended).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("upstream stream not interrupted") }))
    }))
})
