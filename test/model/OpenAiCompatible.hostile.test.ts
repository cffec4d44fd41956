/**
 * Issue 18, "a real provider can never hurt the caller": a hostile OpenAI-compatible server on
 * loopback (the FakeProvider, started by each test), one behaviour per test, through the client
 * the CLI uses (`FetchHttpClient`: `fetch` inflates compressed bodies and would follow
 * redirects by itself) and, where the transport speaks, the others too. The API key is fresh
 * and random for each run, and not `sk-`-shaped: only scrubbing the key itself keeps it out,
 * and every error, record, event, log line and stderr text here is checked for the key and for
 * every 8-character piece of it.
 */
import { FetchHttpClient, FileSystem } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import {
  Chunk,
  Deferred,
  Duration,
  Effect,
  Either,
  FastCheck as fc,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Metric,
  Redacted,
  Stream,
  TestClock
} from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as OpenAiCompatible from "../../src/model/OpenAiCompatible.js"
import * as RateLimitHeaders from "../../src/model/RateLimitHeaders.js"
import * as Retry from "../../src/policy/Retry.js"
import * as StreamingAnswer from "../../src/stream/StreamingAnswer.js"
import * as TestStdio from "../cli/TestStdio.js"
import * as Wiz from "../cli/Wiz.js"
import * as Fake from "../support/FakeProvider.js"
import * as Secrets from "../support/Secrets.js"
import { awaitTimer } from "../support/timers.js"

const key = Secrets.freshKey()
const request = new AiModel.CompletionRequest({ prompt: "Summarise: Effect is a TypeScript library.", maxTokens: 64 })
const json = { "content-type": "application/json" }
const sse = { "content-type": "text/event-stream" }
const encodings: ReadonlyArray<Fake.Encoding> = ["gzip", "deflate", "br"]

/** Every log line written in this file, at every level. */
const logs: Array<string> = []
const captureLogs = Layer.merge(
  Logger.replace(Logger.defaultLogger, Logger.make(({ cause, message }) => void logs.push(`${String(message)} ${String(cause)}`))),
  Logger.minimumLogLevel(LogLevel.All)
)

/** `error` (and the log so far) hold no piece of the key; returns it. */
const clean = <E extends { readonly message: string }>(error: E): E => {
  Secrets.expectNoKey(`${error.message} ${JSON.stringify(error)}`, key, "an error")
  Secrets.expectNoKey(logs.join("\n"), key, "the log")
  return error
}

const setup = (options: Partial<OpenAiCompatible.Options> = {}, fakeOptions: Fake.Options = {}) =>
  Effect.gen(function*() {
    const fake = yield* Fake.make(fakeOptions)
    const model = yield* OpenAiCompatible.make({ baseUrl: fake.url, model: "hostile", apiKey: Redacted.make(key), ...options })
    return { fake, model }
  })

const collect = <E>(stream: Stream.Stream<AiModel.CompletionChunk, E>) =>
  Effect.map(Stream.runCollect(stream), Chunk.toReadonlyArray)

/** The call's error, checked for the key; a call that succeeds fails the test (saying only how long its answer was). */
const generateFails = (model: AiModel.AiModel.Service, req = request) =>
  model.generate(req).pipe(
    Effect.flatMap((answer) => Effect.dieMessage(`expected a failure, got an answer of ${answer.text.length} characters`)),
    Effect.flip,
    Effect.map(clean)
  )
const streamFails = (model: AiModel.AiModel.Service, req = request) =>
  collect(model.stream(req)).pipe(
    Effect.flatMap((chunks) => Effect.dieMessage(`expected a failure, got ${chunks.length} chunks`)),
    Effect.flip,
    Effect.map(clean)
  )

/** A whole completion's JSON with `content`. */
const completion = (content: string) =>
  JSON.stringify({ choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }] })

/** A bomb whose end (wire bytes, finished or not) a test can wait for. */
const watchedBomb = (options: Omit<Fake.BombOptions, "onEnd">) =>
  Effect.map(Deferred.make<{ readonly wire: number; readonly finished: boolean }>(), (ended) => ({
    reply: Fake.bomb({ ...options, onEnd: (wire, finished) => Deferred.unsafeDone(ended, Effect.succeed({ wire, finished })) }),
    ended: Deferred.await(ended)
  }))

/** The clients a user can give the model, and the transport codes each reports. */
const clients = [
  { name: "fetch (the CLI's)", layer: FetchHttpClient.layer },
  { name: "undici", layer: NodeHttpClient.layerUndici },
  { name: "node:http", layer: NodeHttpClient.layer }
] as const

layer(Layer.merge(FetchHttpClient.layer, captureLogs))("OpenAiCompatible against a hostile server", (it) => {
  describe("issue 18.1: every size limit counts decoded bytes as they arrive", () => {
    it.scoped("issue 18.1: a compressed answer past maxResponseBytes is refused, though its content-length is a few KB (gzip, deflate, br)", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxResponseBytes: 1024 * 1024 })
        for (const encoding of encodings) {
          yield* fake.script(
            Fake.raw(200, completion("x".repeat(2 * 1024 * 1024)), { headers: json, encoding }),
            Fake.raw(200, completion("fits"), { headers: json, encoding })
          )
          expect(yield* generateFails(model)).toStrictEqual(
            new AiModel.MalformedResponse({ model: "hostile", reason: "the response body is larger than 1048576 bytes" })
          )
          expect((yield* model.generate(request)).text).toBe("fits")
        }
        // a whole answer is held while it is read: by default it may take 2 MiB of the 8 a stream may
        const { fake: plain, model: defaults } = yield* setup()
        yield* plain.script(Fake.raw(200, completion("x".repeat(3 * 1024 * 1024)), { headers: json, encoding: "gzip" }))
        expect(yield* generateFails(defaults)).toStrictEqual(
          new AiModel.MalformedResponse({ model: "hostile", reason: "the response body is larger than 2097152 bytes" })
        )
      }))

    it.scoped("issue 18.1: a compressed answer that never ends inflating is stopped at the limit: the server never gets to send it all", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxResponseBytes: 1024 * 1024 })
        for (const encoding of encodings) {
          const bomb = yield* watchedBomb({ encoding, prefix: "{\"choices\":[{\"message\":{\"content\":\"" })
          yield* fake.script(bomb.reply)
          expect(yield* generateFails(model)).toStrictEqual(
            new AiModel.MalformedResponse({ model: "hostile", reason: "the response body is larger than 1048576 bytes" })
          )
          expect((yield* bomb.ended).finished).toBe(false)
        }
      }))

    it.scoped("issue 18.1: a compressed error body is read only to 64 KiB inflated: the call fails with its status, the rest unread", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const bomb = yield* watchedBomb({ status: 500, prefix: "{\"error\":{\"message\":\"" })
        yield* fake.script(bomb.reply)
        const error = yield* generateFails(model)
        expect(error).toMatchObject({ _tag: "ProviderError", status: 500 })
        expect((error as AiModel.ProviderError).reason.length).toBeLessThanOrEqual(300)
        expect((yield* bomb.ended).finished).toBe(false)
      }))

    it.scoped("issue 18.1: an event stream counts inflated bytes: a compressed line past maxLineLength, a compressed stream past maxResponseBytes", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxLineLength: 64 * 1024, maxResponseBytes: 1024 * 1024 })
        const line = yield* watchedBomb({ contentType: "text/event-stream", prefix: "data: " })
        const total = yield* watchedBomb({ contentType: "text/event-stream", encoding: "br", unit: "data: {\"choices\":[{\"delta\":{}}]}\n\n" })
        yield* fake.script(line.reply, total.reply)
        expect(yield* streamFails(model)).toStrictEqual(
          new AiModel.MalformedResponse({ model: "hostile", reason: "an event-stream line is longer than 65536 characters" })
        )
        expect(yield* streamFails(model)).toStrictEqual(
          new AiModel.MalformedResponse({ model: "hostile", reason: "the event stream is larger than 1048576 bytes" })
        )
        expect([(yield* line.ended).finished, (yield* total.ended).finished]).toStrictEqual([false, false])
      }))

    const content = fc.string({ unit: fc.constantFrom("a", "é", "€", "😀", "中", " ", "\"", "\\", "\n"), maxLength: 3000 })
    const encoding = fc.constantFrom<"identity" | Fake.Encoding>("identity", "gzip", "deflate", "br")

    it.scoped.prop(
      "issue 18.1: any answer, compressed any way and cut anywhere, reads back whole, or fails at the limit on its inflated size",
      [content, encoding, fc.integer({ min: 1, max: 700 }), fc.integer({ min: -120, max: 120 }), fc.boolean()],
      ([text, coding, split, slack, chunked]) =>
        Effect.gen(function*() {
          const body = completion(text)
          const size = new TextEncoder().encode(body).length
          const limit = Math.max(1, size + slack)
          const { fake, model } = yield* setup({ maxResponseBytes: limit })
          yield* fake.script(Fake.raw(200, body, { headers: json, split, chunked, ...(coding === "identity" ? {} : { encoding: coding }) }))
          const answer = yield* Effect.either(Effect.map(model.generate(request), (completion) => completion.text))
          if (size <= limit) expect(answer).toStrictEqual(Either.right(text))
          else expect(Either.isLeft(answer) && answer.left).toStrictEqual(new AiModel.MalformedResponse({ model: "hostile", reason: `the response body is larger than ${limit} bytes` }))
        }),
      { fastCheck: { numRuns: 25 } }
    )

    it.scoped.prop(
      "issue 18.1: any event stream, compressed any way and cut anywhere, decodes to the same answer; a line past maxLineLength fails",
      [fc.array(content, { minLength: 1, maxLength: 12 }), encoding, fc.integer({ min: 1, max: 300 }), fc.integer({ min: -40, max: 40 })],
      ([pieces, coding, split, slack]) =>
        Effect.gen(function*() {
          const lines = [
            ...pieces.map((piece) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] })}`),
            `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}`,
            "data: [DONE]"
          ]
          const longest = Math.max(...lines.map((line) => line.length))
          const maxLineLength = Math.max(1, longest + slack)
          const { fake, model } = yield* setup({ maxLineLength })
          yield* fake.script(Fake.raw(200, lines.map((line) => `${line}\n\n`).join(""), {
            headers: sse,
            split,
            chunked: true,
            ...(coding === "identity" ? {} : { encoding: coding })
          }))
          const answer = yield* Effect.either(collect(model.stream(request)))
          if (longest <= maxLineLength) expect(Either.getOrThrow(answer).map((chunk) => chunk.delta).join("")).toBe(pieces.join(""))
          else expect(answer).toStrictEqual(Either.left(new AiModel.MalformedResponse({ model: "hostile", reason: `an event-stream line is longer than ${maxLineLength} characters` })))
        }),
      { fastCheck: { numRuns: 25 } }
    )
  })

  describe("issue 18.2: an answer that never ends", () => {
    it.scoped("issue 18.2: a stream running far past the maxTokens it asked for ends with MalformedResponse naming the bound", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.answer({ pieces: Array.from({ length: 5000 }, () => " word") }))
        const small = new AiModel.CompletionRequest({ prompt: "Say a word.", maxTokens: 16 })
        const delivered: Array<string> = []
        const error = yield* model.stream(small).pipe(
          Stream.runForEach((chunk) => Effect.sync(() => void delivered.push(chunk.delta))),
          Effect.flip,
          Effect.map(clean)
        )
        expect(error).toStrictEqual(new AiModel.MalformedResponse({
          model: "hostile",
          reason: "the answer ran past 128 tokens (4 × the 16 maxTokens it asked for, + 64; maxTokensOverrun): the server does not stop at max_tokens"
        }))
        expect(delivered.length).toBe(128)
        // an answer within the bound is untouched, and the bound can be lifted
        const lifted = yield* OpenAiCompatible.make({ baseUrl: fake.url, model: "hostile", apiKey: Redacted.make(key), maxTokensOverrun: Infinity })
        yield* fake.script(Fake.answer({ pieces: Array.from({ length: 128 }, () => " word") }), Fake.answer({ pieces: Array.from({ length: 500 }, () => " word") }))
        expect((yield* collect(model.stream(small))).length).toBe(129)
        expect((yield* collect(lifted.stream(small))).length).toBe(501)
      }))

    it.scoped("issue 18.2: a stream trickling a token every 250 ms ends at StreamingAnswer's deadline, first byte to last", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(Fake.answer({ pieces: Array.from({ length: 1000 }, () => " tok"), between: "250 millis" }))
        const answer = StreamingAnswer.make({ deadline: "10 seconds" })
        const delivered: Array<string> = []
        const reader = yield* answer([StreamingAnswer.fromModel(model, request)]).pipe(
          Stream.runForEach((chunk) => Effect.sync(() => void delivered.push(chunk.delta))),
          Effect.flip,
          Effect.fork
        )
        for (let step = 0; step < 40; step++) {
          yield* awaitTimer("250 millis")
          yield* TestClock.adjust("250 millis")
        }
        const error = clean(yield* Fiber.join(reader))
        expect(error).toBeInstanceOf(Retry.DeadlineExceeded)
        expect(error).toMatchObject({ deadline: Duration.seconds(10), attempts: 1 })
        expect(delivered.length).toBeGreaterThanOrEqual(39)
        expect(delivered.length).toBeLessThanOrEqual(41)
      }))
  })

  describe("issue 18.3: no piece of the key in any error", () => {
    it.scoped("issue 18.3: whatever the server echoes, and wherever a text is cut, no 8 characters of the key reach an error", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        // the key starts 60 characters in: a text cut at 80 before scrubbing kept 20 of it
        const pad = "a".repeat(60)
        const echo = `${pad}${key} and more`
        yield* fake.script(
          Fake.raw(200, echo, { headers: json }),
          Fake.raw(200, JSON.stringify([echo]), { headers: json }),
          Fake.raw(200, JSON.stringify({ error: { message: echo, code: key } }), { headers: json }),
          Fake.raw(500, echo, { headers: { "content-type": "text/plain" } }),
          Fake.raw(502, `<html><head><title>${echo}</title></head></html>`, { headers: { "content-type": "text/html" } }),
          Fake.error(401, { message: `Incorrect API key provided: ${key.slice(0, 12)}...${key.slice(-10)}`, code: "invalid_api_key" }),
          Fake.error(400, { message: "bad", type: `invalid_request ${key}`, code: key.toUpperCase() === key ? "x" : key }),
          Fake.redirect(`http://${key.slice(5, 25).toLowerCase()}.invalid/v1/chat/completions`, 302)
        )
        for (let i = 0; i < 8; i++) yield* generateFails(model)
        yield* fake.script(
          Fake.raw(200, `data: ${echo}\n\n`, { headers: sse }),
          Fake.raw(200, `data: {"id":"${echo}"}\n\n`, { headers: sse }),
          Fake.raw(200, `data: ${JSON.stringify([echo])}\n\n`, { headers: sse }),
          Fake.raw(200, `event: error\ndata: {"error":{"message":"${echo}"}}\n\n`, { headers: sse }),
          Fake.raw(200, `<html><title>${echo}</title></html>`, { headers: { "content-type": "text/html" } })
        )
        for (let i = 0; i < 5; i++) yield* streamFails(model)
        expect((yield* fake.requests).length).toBe(13)
      }))
  })

  describe("issue 18.4: redirects by our rule", () => {
    it.scoped("issue 18.4: a redirect to another origin is never followed, whatever its status: a typed error names where, the other server gets nothing", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const elsewhere = yield* Fake.make()
        for (const status of [301, 302, 303, 307, 308]) {
          yield* fake.script(Fake.redirect(`${elsewhere.url}/chat/completions`, status))
          expect(yield* generateFails(model)).toStrictEqual(new AiModel.ProviderError({
            model: "hostile",
            status,
            reason: `redirected to another host (${elsewhere.origin}); not followed, so the API key stays with ${fake.origin}`
          }))
        }
        yield* fake.script(Fake.redirect(`${elsewhere.url}/chat/completions`, 307))
        expect(yield* streamFails(model)).toMatchObject({ _tag: "ProviderError", status: 307 })
        expect(yield* elsewhere.requests).toStrictEqual([])
      }))

    it.scoped("issue 18.4: a 301, 302 or 303 is not followed even to the same origin: the POST would become a GET without the prompt", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        for (const status of [301, 302, 303]) {
          yield* fake.script(Fake.redirect(`${fake.url}/chat/completions?moved=1`, status))
          expect(yield* generateFails(model)).toStrictEqual(new AiModel.ProviderError({
            model: "hostile",
            status,
            reason: `a ${status} redirect to ${fake.url}/chat/completions?moved=1 would send a GET without the prompt; not followed (only 307 and 308 keep the POST)`
          }))
        }
        const sent = yield* fake.requests
        expect(sent.map((r) => [r.method, r.path])).toStrictEqual(Array.from({ length: 3 }, () => ["POST", "/v1/chat/completions"]))
      }))

    it.scoped("issue 18.4: a 307 or 308 to the same origin is sent again with the same method, body and key, at most maxRedirects times", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup({ maxRedirects: 2 })
        yield* fake.script(
          Fake.redirect(`${fake.url}/chat/completions?hop=1`, 307),
          Fake.redirect("/v1/chat/completions?hop=2", 308),
          Fake.answer({ text: "after two hops" })
        )
        expect((yield* model.generate(request)).text).toBe("after two hops")
        const [first, ...hops] = yield* fake.requests
        expect(hops.map((r) => [r.method, r.path, r.headers["authorization"]])).toStrictEqual([
          ["POST", "/v1/chat/completions?hop=1", `Bearer ${key}`],
          ["POST", "/v1/chat/completions?hop=2", `Bearer ${key}`]
        ])
        expect(hops.every((r) => JSON.stringify(r.body) === JSON.stringify(first!.body))).toBe(true)
        const loop = Fake.redirect(`${fake.url}/chat/completions`, 308)
        yield* fake.script(loop, loop, loop, loop)
        expect(yield* generateFails(model)).toMatchObject({ _tag: "ProviderError", status: 308, reason: "more than 2 redirects" })
        expect((yield* fake.requests).length).toBe(6)
      }))
  })

  describe("issue 18.5: errors name their cause", () => {
    it.scoped("issue 18.5: a 500 whose JSON says what broke keeps the provider's message; a 408 names its status", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        yield* fake.script(
          Fake.raw(500, JSON.stringify({ error: "SyntaxError", message: "Unexpected token in the tool schema at position 3", statusCode: 500 }), { headers: json }),
          Fake.error(408, { message: "Request timed out" })
        )
        expect(yield* generateFails(model)).toStrictEqual(
          new AiModel.ProviderError({ model: "hostile", status: 500, reason: "SyntaxError: Unexpected token in the tool schema at position 3" })
        )
        const timeout = yield* generateFails(model)
        expect(timeout).toMatchObject({ _tag: "ModelTimeout", status: 408 })
        expect(timeout.message).toMatch(/^hostile: the provider gave up with HTTP 408 \(request timeout\) after /)
      }))
  })

  describe("issue 18.6: headers are not taken at face value", () => {
    it.scoped("issue 18.6: a 429 whose reset is 99999999999999999999999999h is RateLimited without a retryAfter, and the hint is counted", () =>
      Effect.gen(function*() {
        const { fake, model } = yield* setup()
        const before = (yield* Metric.value(RateLimitHeaders.metrics.ignored)).count
        yield* fake.script(Fake.error(429, { message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" }, {
          "x-ratelimit-limit": "100",
          "x-ratelimit-remaining": "0",
          "x-ratelimit-reset": "99999999999999999999999999h"
        }))
        expect(yield* generateFails(model)).toStrictEqual(new AiModel.RateLimited({
          model: "hostile",
          limit: "requests",
          rateLimits: new AiModel.RateLimits({ requests: new AiModel.RateLimitWindow({ limit: 100, remaining: 0 }) })
        }))
        expect((yield* Metric.value(RateLimitHeaders.metrics.ignored)).count - before).toBe(1)
      }))
  })
})

describe("OpenAiCompatible against a hostile server: the cause of a transport failure, on every client", () => {
  const fails = (baseUrl: string) =>
    Effect.flatMap(
      OpenAiCompatible.make({ baseUrl, model: "hostile", apiKey: Redacted.make(key) }),
      (model) => Effect.map(Effect.flip(model.generate(request)), clean)
    )
  const expectCause = (error: AiModel.ModelError, code: string) => {
    expect(error).toMatchObject({ _tag: "Unavailable", code })
    expect((error as AiModel.Unavailable).reason).toContain(code)
    expect(error.message).not.toMatch(/^hostile: unavailable: fetch failed$/)
  }
  const codes: Record<(typeof clients)[number]["name"], { socket: string; notHttp: string; header: string; tls: string }> = {
    "fetch (the CLI's)": { socket: "UND_ERR_SOCKET", notHttp: "HPE_INVALID_CONSTANT", header: "UND_ERR_HEADERS_OVERFLOW", tls: "ERR_SSL_WRONG_VERSION_NUMBER" },
    undici: { socket: "UND_ERR_SOCKET", notHttp: "HPE_INVALID_CONSTANT", header: "UND_ERR_HEADERS_OVERFLOW", tls: "ERR_SSL_WRONG_VERSION_NUMBER" },
    "node:http": { socket: "ECONNRESET", notHttp: "HPE_INVALID_CONSTANT", header: "HPE_HEADER_OVERFLOW", tls: "EPROTO" }
  }

  for (const client of clients) {
    const expected = codes[client.name]
    it.scoped(`issue 18.5: ${client.name}: a refused connection says ECONNREFUSED, in its reason and its code`, () =>
      Effect.gen(function*() {
        expectCause(yield* fails(`http://127.0.0.1:${yield* Fake.closedPort}/v1`), "ECONNREFUSED")
      }).pipe(Effect.provide(client.layer)))

    it.scoped(`issue 18.5: ${client.name}: a socket closed before the head says ${expected.socket}`, () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make()
        yield* fake.script(Fake.drop)
        expectCause(yield* fails(fake.url), expected.socket)
      }).pipe(Effect.provide(client.layer)))

    it.scoped(`issue 18.5: ${client.name}: a reply that is not HTTP says ${expected.notHttp}`, () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make()
        yield* fake.script(Fake.socket("HELLO, this is not HTTP\r\n\r\n"))
        expectCause(yield* fails(fake.url), expected.notHttp)
      }).pipe(Effect.provide(client.layer)))

    it.scoped(`issue 18.5: ${client.name}: a 100 KB header says ${expected.header}`, () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make()
        yield* fake.script(Fake.socket(`HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(100_000)}\r\ncontent-length: 0\r\n\r\n`))
        expectCause(yield* fails(fake.url), expected.header)
      }).pipe(Effect.provide(client.layer)))

    it.scoped(`issue 18.5: ${client.name}: a TLS failure (https to a plain server) says ${expected.tls}`, () =>
      Effect.gen(function*() {
        const fake = yield* Fake.make()
        expectCause(yield* fails(`https://127.0.0.1:${fake.port}/v1`), expected.tls)
      }).pipe(Effect.provide(client.layer)))
  }
})

describe("wiz against a hostile server: records, events and stderr", () => {
  /** `wiz <args>` with the key in WIZ_HOSTILE_KEY; its stdout, stderr and events file, checked for the key. */
  const wiz = (fake: Fake.FakeProvider, command: "run" | "ask", ...args: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      process.env["WIZ_HOSTILE_KEY"] = key
      const stdio = TestStdio.make({ stdin: "" })
      const code = yield* Wiz.exitCode(
        stdio,
        command,
        ...args,
        "--model",
        "openai-compatible",
        "--base-url",
        fake.url,
        "--model-name",
        "hostile",
        "--api-key-env",
        "WIZ_HOSTILE_KEY",
        ...(command === "run" ? ["--events", `${dir}/events.jsonl`, "--no-progress"] : [])
      ).pipe(Effect.ensuring(Effect.sync(() => delete process.env["WIZ_HOSTILE_KEY"])))
      const events = command === "run" ? yield* fs.readFileString(`${dir}/events.jsonl`) : ""
      Secrets.expectNoKey(stdio.stdout(), key, "stdout (the records)")
      Secrets.expectNoKey(stdio.stderr(), key, "stderr")
      Secrets.expectNoKey(events, key, "the --events file")
      return { code, stdout: stdio.stdout(), stderr: stdio.stderr(), events, dir }
    })

  const tasksFile = (dir: string, count: number) =>
    Effect.flatMap(FileSystem.FileSystem, (fs) =>
      Effect.as(
        fs.writeFileString(
          `${dir}/tasks.jsonl`,
          Array.from({ length: count }, (_, i) => JSON.stringify({ id: `t${i}`, prompt: `Summarise: task ${i}.` })).join("\n") + "\n"
        ),
        `${dir}/tasks.jsonl`
      ))

  const records = (stdout: string) => stdout.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line))

  it.scopedLive("issue 18.3: wiz run and wiz ask write no piece of the key to their records, their --events file or stderr", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      const echo = `${"a".repeat(60)}${key} and more`
      const replies = [
        Fake.raw(200, echo, { headers: json }),
        Fake.raw(200, JSON.stringify([echo]), { headers: json }),
        Fake.raw(500, echo, { headers: { "content-type": "text/plain" } }),
        Fake.raw(502, `<html><head><title>${echo}</title></head></html>`, { headers: { "content-type": "text/html" } }),
        Fake.error(401, { message: `Incorrect API key provided: ${key.slice(0, 12)}...${key.slice(-10)}` }),
        Fake.redirect(`http://${key.slice(5, 25).toLowerCase()}.invalid/v1/chat/completions`, 302)
      ]
      yield* fake.script(...replies)
      const run = yield* wiz(fake, "run", yield* tasksFile(dir, replies.length), "--retries", "0", "--concurrency", "1")
      expect(run.code).toBe(0)
      expect(records(run.stdout).map((r) => r.status)).toStrictEqual(replies.map(() => "failed"))
      expect(run.events).toContain("TaskFinished")
      for (const reply of [
        Fake.raw(200, `data: ${echo}\n\n`, { headers: sse }),
        Fake.raw(200, `data: {"id":"${echo}"}\n\n`, { headers: sse }),
        Fake.raw(200, `event: error\ndata: {"error":{"message":"${echo}"}}\n\n`, { headers: sse })
      ]) {
        yield* fake.script(reply)
        const ask = yield* wiz(fake, "ask", "Say something.", "--retries", "0")
        expect(ask.code).toBe(1)
        expect(ask.stderr).toMatch(/^wiz: no answer: /)
      }
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("issue 18.4: wiz run against a 302 to another port records the task failed, never succeeded with the other server's answer", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const elsewhere = yield* Fake.make()
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      yield* fake.script(Fake.redirect(`${elsewhere.url}/chat/completions`, 302))
      const run = yield* wiz(fake, "run", yield* tasksFile(dir, 1), "--retries", "0")
      const [record] = records(run.stdout)
      expect(record).toMatchObject({ id: "t0", status: "failed", error: { _tag: "ProviderError" } })
      expect(record.error.message).toContain(`redirected to another host (${elsewhere.origin})`)
      expect(yield* elsewhere.requests).toStrictEqual([])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("issue 18.2: wiz ask --deadline ends a stream that keeps trickling from a real server", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      yield* fake.script(Fake.answer({ text: "tok", pieces: Array.from({ length: 10_000 }, () => " tok"), between: "20 millis" }))
      const started = Date.now()
      const ask = yield* wiz(fake, "ask", "Say something long.", "--deadline", "1s")
      expect(ask.code).toBe(1)
      expect(Date.now() - started).toBeLessThan(5000)
      expect(ask.stderr).toMatch(/DeadlineExceeded: no result within 1s/)
      expect(ask.stdout.length).toBeGreaterThan(10)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("issue 18.6: wiz run: a 429 whose reset is 99999999999999999999999999h is retried like any 429, and the task succeeds", () =>
    Effect.gen(function*() {
      const fake = yield* Fake.make()
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped()
      yield* fake.script(
        Fake.error(429, { message: "Rate limit reached", type: "requests", code: "rate_limit_exceeded" }, {
          "x-ratelimit-limit": "100",
          "x-ratelimit-remaining": "0",
          "x-ratelimit-reset": "99999999999999999999999999h"
        }),
        Fake.answer({ text: "fine after all" })
      )
      const run = yield* wiz(fake, "run", yield* tasksFile(dir, 1), "--retries", "1")
      expect(records(run.stdout)).toMatchObject([{ id: "t0", status: "succeeded", output: "fine after all", attempts: 2 }])
    }).pipe(Effect.provide(NodeContext.layer)))
})
