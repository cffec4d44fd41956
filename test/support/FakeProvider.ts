/**
 * An OpenAI-compatible chat-completions server on 127.0.0.1, port 0, built on
 * `@effect/platform`'s HTTP server, scripted per test: each request takes the next {@link Reply}
 * from the script (and, when the script is empty, the default: an answer from an `AiModel`,
 * the embedded simulator unless given another). Replies cover every fault a real provider or a
 * proxy in front of it shows: 429 with each rate-limit header format, `insufficient_quota`, 500,
 * 503, 529, a stall, a slow first token, an `error` event after a 200, a stream without
 * `[DONE]`, bodies cut mid-line and mid-UTF-8 character, malformed JSON, an HTML error page, an
 * oversize body, a redirect to another host, a connection dropped mid-answer. And the hostile
 * ones (issue 18): a body compressed with gzip, deflate or br (its `content-length` the
 * compressed size), a compressed body that never ends inflating (a "bomb": `bomb`), bytes
 * written straight to the socket (a reply that is not HTTP, a 100 KB header: `socket`).
 *
 * Delays are `Effect.sleep`s on the server's `Clock`: built inside a test, that is the test's
 * `TestClock`, so a slow first token takes no real time. A reply can also wait on a `gate` the
 * test opens. Every request is recorded (`requests`, `received(n)`), so a test can check what
 * was sent (the `Authorization` header, the body) and wait until the server has it.
 *
 * `npm run serve:fake` starts one for a person to try the whole path (see `serve-fake.ts`).
 */
import { NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Duration, Effect, Option, Scope, Stream, SubscriptionRef } from "effect"
import * as Http from "node:http"
import { Readable } from "node:stream"
import * as Zlib from "node:zlib"
import * as AiModel from "../../src/model/AiModel.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"

// -----------------------------------------------------------------------------
// replies
// -----------------------------------------------------------------------------

/** How an answer is sent. */
export interface AnswerOptions {
  /** The text; by default the model's answer to the request's prompt. */
  readonly text?: string
  readonly finishReason?: "stop" | "length" | "content_filter"
  /** Usage to report; `false` reports none. By default the model's (or a count of words). */
  readonly usage?: { readonly prompt: number; readonly completion: number } | false
  /** Extra response headers (rate-limit headers on a success, say). */
  readonly headers?: Readonly<Record<string, string>>
  /** Streaming: content chunks, by default one per word of the text. */
  readonly pieces?: ReadonlyArray<string>
  /** Streaming: write the body in pieces of this many bytes (cutting lines and UTF-8 characters). */
  readonly split?: number
  /** Streaming: end with `data: [DONE]` (default true). */
  readonly done?: boolean
  /** Streaming: send the usage chunk; by default when the request asked with `stream_options.include_usage`. */
  readonly usageChunk?: boolean
  /** Streaming: after this many content chunks, send `error` (as a `data:` JSON `{ error }`, or an `event: error`) and end. */
  readonly errorAfter?: {
    readonly chunks: number
    readonly error: Readonly<Record<string, unknown>>
    readonly asEvent?: boolean
  }
  /** Streaming: after this many content chunks, destroy the connection. */
  readonly dropAfter?: number
  /** Streaming: wait this long (server Clock) after the head, before the first content chunk. */
  readonly firstTokenAfter?: Duration.DurationInput
  /** Streaming: wait this long between content chunks. */
  readonly between?: Duration.DurationInput
  /** Wait for this before sending anything after the head (streaming) or at all (whole). */
  readonly gate?: Effect.Effect<void>
  /** Whole: send the JSON with `content-length` (default) or chunked without one. */
  readonly chunked?: boolean
}

/** One scripted reply. */
export type Reply =
  | { readonly _tag: "Answer"; readonly options: AnswerOptions }
  | {
    readonly _tag: "Raw"
    readonly status: number
    readonly headers: Readonly<Record<string, string>>
    readonly body: string | Uint8Array
    readonly split: number | undefined
    readonly chunked: boolean
    readonly gate: Effect.Effect<void> | undefined
  }
  | { readonly _tag: "Stall"; readonly afterHead: boolean; readonly headers: Readonly<Record<string, string>> }
  | { readonly _tag: "Drop" }
  | { readonly _tag: "Bomb"; readonly options: BombOptions }
  | { readonly _tag: "Socket"; readonly bytes: string | Uint8Array }

/** A content coding a body can be sent in. */
export type Encoding = "gzip" | "deflate" | "br"

/** Compresses `bytes` in `encoding`. */
export const compress = (bytes: Uint8Array, encoding: Encoding): Uint8Array =>
  encoding === "gzip"
    ? Zlib.gzipSync(bytes)
    : encoding === "deflate"
    ? Zlib.deflateSync(bytes)
    : Zlib.brotliCompressSync(bytes, { params: { [Zlib.constants.BROTLI_PARAM_QUALITY]: 4 } })

/** A compressed body that inflates to `prefix` and then `unit` over and over. */
export interface BombOptions {
  readonly status?: number
  readonly encoding?: Encoding
  readonly contentType?: string
  readonly prefix?: string
  readonly unit?: string
  /** How much it inflates to in all (prefix included); endless by default. */
  readonly decodedBytes?: number
  /** Told how many bytes went on the wire, and whether the body was sent to its end, when the reply is over. */
  readonly onEnd?: (wire: number, finished: boolean) => void
}

export const answer = (options: AnswerOptions = {}): Reply => ({ _tag: "Answer", options })

/**
 * A raw response: exactly these bytes, optionally written `split` bytes at a time; with an
 * `encoding`, compressed in it first (`content-encoding` set, `content-length` the compressed size).
 */
export const raw = (
  status: number,
  body: string | Uint8Array,
  options: {
    readonly headers?: Readonly<Record<string, string>>
    readonly split?: number
    readonly chunked?: boolean
    readonly gate?: Effect.Effect<void>
    readonly encoding?: Encoding
  } = {}
): Reply => ({
  _tag: "Raw",
  status,
  headers: options.encoding === undefined ? options.headers ?? {} : { ...options.headers, "content-encoding": options.encoding },
  body: options.encoding === undefined ? body : compress(typeof body === "string" ? encoder.encode(body) : body, options.encoding),
  split: options.split,
  chunked: options.chunked ?? false,
  gate: options.gate
})

/**
 * A compressed body that inflates far past any limit (endless by default), compressed as it is
 * sent, only as fast as the client reads it: a client that stops reading at its limit stops it.
 */
export const bomb = (options: BombOptions = {}): Reply => ({ _tag: "Bomb", options })

/** These bytes written straight to the socket, which then ends: no HTTP of ours around them. */
export const socket = (bytes: string | Uint8Array): Reply => ({ _tag: "Socket", bytes })

/** A JSON error body in OpenAI's shape. */
export const error = (
  status: number,
  error: { readonly message: string; readonly type?: string; readonly code?: string | null },
  headers: Readonly<Record<string, string>> = {}
): Reply =>
  raw(status, JSON.stringify({ error: { message: error.message, type: error.type ?? "error", param: null, code: error.code ?? null } }), {
    headers: { "content-type": "application/json", ...headers }
  })

/** Accept the request and never answer (`afterHead`: send the head of a 200 event stream, then nothing). */
export const stall = (afterHead = false, headers: Readonly<Record<string, string>> = {}): Reply => ({ _tag: "Stall", afterHead, headers })

/** Destroy the connection without a response. */
export const drop: Reply = { _tag: "Drop" }

/** A redirect to `location`. */
export const redirect = (location: string, status = 307): Reply => raw(status, "", { headers: { location } })

/** An HTML error page, as a proxy in front of the API sends. */
export const htmlPage = (status: number, title: string): Reply =>
  raw(status, `<!DOCTYPE html>\n<html><head><title>${title}</title></head><body><h1>${title}</h1></body></html>`, {
    headers: { "content-type": "text/html; charset=utf-8" }
  })

// -----------------------------------------------------------------------------
// rate-limit header formats
// -----------------------------------------------------------------------------

/** A window to render, times in milliseconds. */
export interface Window {
  readonly limit: number
  readonly remaining: number
  readonly resetMillis: number
}

/** A Go `time.Duration` as its `String()` writes it: `6m0s`, `1.5s`, `12ms`, `0s`. */
export const goDuration = (millis: number): string => {
  if (millis === 0) return "0s"
  if (millis < 1) return `${trim(millis * 1000)}µs`
  if (millis < 1000) return `${trim(millis)}ms`
  const hours = Math.floor(millis / 3_600_000)
  const minutes = Math.floor((millis % 3_600_000) / 60_000)
  const seconds = (millis % 60_000) / 1000
  const s = `${trim(seconds)}s`
  if (hours > 0) return `${hours}h${minutes}m${s}`
  if (minutes > 0) return `${minutes}m${s}`
  return s
}

const trim = (n: number): string => String(Math.round(n * 1e6) / 1e6)

/** An IMF-fixdate, as `Retry-After` carries a date. */
export const httpDate = (epochMillis: number): string => new Date(epochMillis).toUTCString()

/** OpenAI's `x-ratelimit-*` headers. */
export const openAiHeaders = (requests: Window, tokens: Window): Record<string, string> => ({
  "x-ratelimit-limit-requests": String(requests.limit),
  "x-ratelimit-remaining-requests": String(requests.remaining),
  "x-ratelimit-reset-requests": goDuration(requests.resetMillis),
  "x-ratelimit-limit-tokens": String(tokens.limit),
  "x-ratelimit-remaining-tokens": String(tokens.remaining),
  "x-ratelimit-reset-tokens": goDuration(tokens.resetMillis)
})

/** Azure OpenAI's: remaining counts, resets in whole seconds, `retry-after-ms`. */
export const azureHeaders = (requests: Window, tokens: Window): Record<string, string> => ({
  "x-ratelimit-remaining-requests": String(requests.remaining),
  "x-ratelimit-remaining-tokens": String(tokens.remaining),
  "x-ratelimit-limit-tokens": String(tokens.limit),
  "x-ratelimit-reset-tokens": String(Math.ceil(tokens.resetMillis / 1000))
})

/** Anthropic's `anthropic-ratelimit-*` headers, resets as RFC 3339 times. */
export const anthropicHeaders = (
  now: number,
  windows: { readonly requests: Window; readonly inputTokens: Window; readonly outputTokens: Window }
): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [kind, window] of [["requests", windows.requests], ["input-tokens", windows.inputTokens], ["output-tokens", windows.outputTokens]] as const) {
    out[`anthropic-ratelimit-${kind}-limit`] = String(window.limit)
    out[`anthropic-ratelimit-${kind}-remaining`] = String(window.remaining)
    out[`anthropic-ratelimit-${kind}-reset`] = new Date(now + window.resetMillis).toISOString()
  }
  return out
}

// -----------------------------------------------------------------------------
// the server
// -----------------------------------------------------------------------------

/** A request as the server received it. */
export interface Received {
  readonly method: string
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  /** The body parsed as JSON, or its text when it is not JSON. */
  readonly body: unknown
}

export interface FakeProvider {
  /** `http://127.0.0.1:PORT/v1`: the base URL to give a client. */
  readonly url: string
  /** `http://HOST:PORT`, no path. */
  readonly origin: string
  readonly port: number
  /** Queue replies for the next requests, in order. */
  readonly script: (...replies: ReadonlyArray<Reply>) => Effect.Effect<void>
  /** Every request received so far. */
  readonly requests: Effect.Effect<ReadonlyArray<Received>>
  /** Waits until `n` requests have been received. */
  readonly received: (n: number) => Effect.Effect<ReadonlyArray<Received>>
}

export interface Options {
  /** Answers the requests the script does not cover; the embedded model with no latency by default. */
  readonly model?: AiModel.AiModel.Service
  /** Host to listen on (default 127.0.0.1). */
  readonly host?: string
  /** Port (default 0: any free one). */
  readonly port?: number
  /** Log each request to stderr. */
  readonly log?: boolean
}

/** Starts the server in the current scope; it stops with the scope. */
export const make = (options: Options = {}): Effect.Effect<FakeProvider, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const model = options.model ?? (yield* EmbeddedModel.make({ seed: 1, timeToFirstToken: 0, perToken: 0, jitter: 0 }))
    const host = options.host ?? "127.0.0.1"
    const nodeServer = Http.createServer({ keepAliveTimeout: 5_000 })
    const server = yield* NodeHttpServer.make(() => nodeServer, { port: options.port ?? 0, host })
    // Runs before the server's own close (finalizers run in reverse): stalled requests would hold it open.
    yield* Effect.addFinalizer(() => Effect.sync(() => nodeServer.closeAllConnections()))
    const address = server.address
    const port = address._tag === "TcpAddress" ? address.port : 0
    const origin = `http://${host}:${port}`
    const queue: Array<Reply> = []
    const log = yield* SubscriptionRef.make<ReadonlyArray<Received>>([])

    const app = Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const text = yield* Effect.orElseSucceed(request.text, () => "")
      let body: unknown = text
      try {
        body = JSON.parse(text)
      } catch {
        // kept as text
      }
      const received: Received = { method: request.method, path: request.url, headers: { ...request.headers }, body }
      yield* SubscriptionRef.update(log, (all) => [...all, received])
      if (options.log === true) {
        yield* Effect.sync(() => process.stderr.write(`fake provider: ${request.method} ${request.url}\n`))
      }
      const res = NodeHttpServerRequest.toServerResponse(request)
      const reply = queue.shift() ?? answer()
      yield* respond(reply, received, res, model)
      return HttpServerResponse.empty()
    })
    yield* server.serve(Effect.catchAllCause(app, (cause) =>
      Effect.as(Effect.logDebug("fake provider: reply failed", cause), HttpServerResponse.empty({ status: 500 }))))

    return {
      url: `${origin}/v1`,
      origin,
      port,
      script: (...replies) => Effect.sync(() => void queue.push(...replies)),
      requests: SubscriptionRef.get(log),
      received: (n) =>
        log.changes.pipe(
          Stream.filter((all) => all.length >= n),
          Stream.runHead,
          Effect.map(Option.getOrElse(() => [] as ReadonlyArray<Received>))
        )
    } satisfies FakeProvider
  })

/** A port nothing listens on (bound, then closed): a connection to it is refused. */
export const closedPort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const server = Http.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 1)))
  })
})

// -----------------------------------------------------------------------------
// writing replies
// -----------------------------------------------------------------------------

const encoder = new TextEncoder()

const write = (res: Http.ServerResponse, bytes: Uint8Array | string): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (res.destroyed) return resume(Effect.void)
    res.write(bytes, () => resume(Effect.void))
  })

const end = (res: Http.ServerResponse): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (res.destroyed || res.writableEnded) return resume(Effect.void)
    res.end(() => resume(Effect.void))
  })

/** Writes `bytes` in pieces of `split` bytes (or at once), each written before the next. */
const writeSplit = (res: Http.ServerResponse, bytes: Uint8Array, split: number | undefined): Effect.Effect<void> => {
  if (split === undefined || split >= bytes.length) return write(res, bytes)
  const pieces: Array<Uint8Array> = []
  for (let at = 0; at < bytes.length; at += split) pieces.push(bytes.subarray(at, at + split))
  return Effect.forEach(pieces, (piece) => write(res, piece), { discard: true })
}

interface Asked {
  readonly prompt: string
  readonly system: string | undefined
  readonly maxTokens: number
  readonly stream: boolean
  readonly includeUsage: boolean
  readonly model: string
}

const asked = (received: Received): Asked => {
  const body = (typeof received.body === "object" && received.body !== null ? received.body : {}) as Record<string, any>
  const messages: Array<{ role?: string; content?: unknown }> = Array.isArray(body["messages"]) ? body["messages"] : []
  const text = (m: { content?: unknown } | undefined) => (typeof m?.content === "string" ? m.content : "")
  const user = messages.filter((m) => m.role !== "system")
  const system = messages.find((m) => m.role === "system")
  return {
    prompt: text(user[user.length - 1]),
    system: system === undefined ? undefined : text(system),
    maxTokens: Number(body["max_tokens"] ?? body["max_completion_tokens"] ?? 256),
    stream: body["stream"] === true,
    includeUsage: body["stream_options"]?.["include_usage"] === true,
    model: typeof body["model"] === "string" ? body["model"] : "fake"
  }
}

const respond = (
  reply: Reply,
  received: Received,
  res: Http.ServerResponse,
  model: AiModel.AiModel.Service
): Effect.Effect<void> => {
  switch (reply._tag) {
    case "Raw":
      return Effect.gen(function*() {
        if (reply.gate !== undefined) yield* reply.gate
        const bytes = typeof reply.body === "string" ? encoder.encode(reply.body) : reply.body
        const headers: Record<string, string> = { ...reply.headers }
        if (!reply.chunked) headers["content-length"] = String(bytes.length)
        res.writeHead(reply.status, headers)
        if (bytes.length > 0) yield* writeSplit(res, bytes, reply.split)
        yield* end(res)
      })
    case "Stall":
      return Effect.gen(function*() {
        if (reply.afterHead) {
          res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...reply.headers })
          res.flushHeaders()
        }
        return yield* Effect.never
      })
    case "Drop":
      return Effect.sync(() => res.socket?.destroy())
    case "Socket":
      return Effect.async<void>((resume) => {
        const connection = res.socket
        if (connection === null) return resume(Effect.void)
        connection.end(reply.bytes, () => resume(Effect.void))
      })
    case "Bomb":
      return sendBomb(reply.options, res)
    case "Answer":
      return answerWith(reply.options, asked(received), res, model)
  }
}

const sendBomb = (options: BombOptions, res: Http.ServerResponse): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const encoding = options.encoding ?? "gzip"
    const unit = Buffer.from(options.unit ?? "x")
    const block = Buffer.alloc(Math.max(unit.length, 64 * 1024 - ((64 * 1024) % unit.length)))
    for (let at = 0; at < block.length; at += unit.length) unit.copy(block, at)
    let left = options.decodedBytes ?? Infinity
    const prefix = Buffer.from(options.prefix ?? "")
    left -= prefix.length
    const source = new Readable({
      read() {
        if (left <= 0) return void this.push(null)
        const piece = left >= block.length ? block : block.subarray(0, left)
        left -= piece.length
        this.push(piece)
      }
    })
    source.unshift(prefix)
    const compressor = encoding === "gzip"
      ? Zlib.createGzip()
      : encoding === "deflate"
      ? Zlib.createDeflate()
      : Zlib.createBrotliCompress({ params: { [Zlib.constants.BROTLI_PARAM_QUALITY]: 4 } })
    let wire = 0
    let done = false
    const finish = (finished: boolean) => {
      if (done) return
      done = true
      source.destroy()
      compressor.destroy()
      options.onEnd?.(wire, finished)
      resume(Effect.void)
    }
    res.writeHead(options.status ?? 200, {
      "content-type": options.contentType ?? "application/json",
      "content-encoding": encoding
    })
    compressor.on("data", (bytes: Buffer) => {
      wire += bytes.length
      if (!res.write(bytes)) compressor.pause()
    })
    res.on("drain", () => compressor.resume())
    compressor.on("end", () => res.end(() => finish(true)))
    res.on("close", () => finish(res.writableFinished))
    source.pipe(compressor)
  })

interface Answered {
  readonly text: string
  readonly finishReason: string
  readonly usage: { readonly prompt: number; readonly completion: number } | undefined
}

const fromModel = (ask: Asked, model: AiModel.AiModel.Service): Effect.Effect<Answered, AiModel.ModelError> =>
  Effect.map(
    model.generate(
      new AiModel.CompletionRequest({
        prompt: ask.prompt === "" ? "(empty)" : ask.prompt,
        maxTokens: Math.max(1, Math.floor(ask.maxTokens) || 1),
        ...(ask.system === undefined ? {} : { system: ask.system })
      })
    ),
    (completion) => ({
      text: completion.text,
      finishReason: completion.finishReason,
      usage: { prompt: completion.usage.promptTokens, completion: completion.usage.completionTokens }
    })
  )

/** A model error as the HTTP response a provider would send for it. */
const errorReply = (error: AiModel.ModelError): Reply => {
  const seconds = (d: Duration.Duration | undefined) => (d === undefined ? {} : { "retry-after": String(Math.max(1, Math.ceil(Duration.toSeconds(d)))) })
  switch (error._tag) {
    case "RateLimited":
      return raw(429, JSON.stringify({ error: { message: error.message, type: "requests", param: null, code: "rate_limit_exceeded" } }), {
        headers: { "content-type": "application/json", ...seconds(error.retryAfter), "x-ratelimit-remaining-requests": "0" }
      })
    case "Overloaded":
      return raw(503, JSON.stringify({ error: { message: "The server is overloaded", type: "server_error", param: null, code: null } }), {
        headers: { "content-type": "application/json", ...seconds(error.retryAfter) }
      })
    case "InvalidRequest":
      return raw(400, JSON.stringify({
        error: {
          message: error.reason,
          type: "invalid_request_error",
          param: "messages",
          code: error.contextLengthExceeded === true ? "context_length_exceeded" : null
        }
      }), { headers: { "content-type": "application/json" } })
    case "Unavailable":
      return drop
    default:
      return raw(500, JSON.stringify({ error: { message: error.message, type: "server_error", param: null, code: null } }), {
        headers: { "content-type": "application/json" }
      })
  }
}

const completionId = "chatcmpl-fake"

const answerWith = (
  options: AnswerOptions,
  ask: Asked,
  res: Http.ServerResponse,
  model: AiModel.AiModel.Service
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const generated = options.text === undefined ? yield* Effect.either(fromModel(ask, model)) : undefined
    if (generated !== undefined && generated._tag === "Left") {
      return yield* respond(errorReply(generated.left), { method: "POST", path: "", headers: {}, body: {} }, res, model)
    }
    const base = generated?._tag === "Right" ? generated.right : undefined
    const text = options.text ?? base?.text ?? ""
    const finishReason = options.finishReason ?? base?.finishReason ?? "stop"
    const usage = options.usage === false
      ? undefined
      : options.usage ?? base?.usage ?? { prompt: ask.prompt.split(/\s+/).length, completion: text.split(/\s+/).filter((w) => w !== "").length }
    const usageJson = usage === undefined
      ? undefined
      : { prompt_tokens: usage.prompt, completion_tokens: usage.completion, total_tokens: usage.prompt + usage.completion }
    const created = 1_700_000_000
    if (!ask.stream) {
      if (options.gate !== undefined) yield* options.gate
      const json = JSON.stringify({
        id: completionId,
        object: "chat.completion",
        created,
        model: ask.model,
        choices: [{ index: 0, message: { role: "assistant", content: text }, logprobs: null, finish_reason: finishReason }],
        ...(usageJson === undefined ? {} : { usage: usageJson })
      })
      const bytes = encoder.encode(json)
      res.writeHead(200, {
        "content-type": "application/json",
        ...(options.chunked === true ? {} : { "content-length": String(bytes.length) }),
        ...options.headers
      })
      yield* write(res, bytes)
      return yield* end(res)
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...options.headers })
    res.flushHeaders()
    if (options.gate !== undefined) yield* options.gate
    if (options.firstTokenAfter !== undefined) yield* Effect.sleep(options.firstTokenAfter)
    const chunk = (delta: Record<string, unknown>, finish: string | null) =>
      `data: ${JSON.stringify({
        id: completionId,
        object: "chat.completion.chunk",
        created,
        model: ask.model,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }]
      })}\n\n`
    const pieces = options.pieces ?? (text.match(/\s*\S+/g) ?? [])
    const events: Array<string> = [chunk({ role: "assistant", content: "" }, null)]
    let sent = 0
    const flush = (final: boolean) => {
      const bytes = encoder.encode(events.join(""))
      events.length = 0
      return final || options.between === undefined
        ? writeSplit(res, bytes, options.split)
        : Effect.zipRight(writeSplit(res, bytes, options.split), Effect.sleep(options.between))
    }
    for (const piece of pieces) {
      if (options.errorAfter !== undefined && sent === options.errorAfter.chunks) break
      if (options.dropAfter !== undefined && sent === options.dropAfter) break
      events.push(chunk({ content: piece }, null))
      sent++
      if (options.between !== undefined || options.split === undefined) yield* flush(false)
    }
    if (options.dropAfter !== undefined && sent === options.dropAfter) {
      yield* flush(true)
      return yield* Effect.sync(() => res.socket?.destroy())
    }
    if (options.errorAfter !== undefined) {
      const { asEvent, error } = options.errorAfter
      events.push(asEvent === true ? `event: error\ndata: ${JSON.stringify({ error })}\n\n` : `data: ${JSON.stringify({ error })}\n\n`)
      yield* flush(true)
      return yield* end(res)
    }
    events.push(chunk({}, finishReason))
    if ((options.usageChunk ?? ask.includeUsage) && usageJson !== undefined) {
      events.push(`data: ${JSON.stringify({ id: completionId, object: "chat.completion.chunk", created, model: ask.model, choices: [], usage: usageJson })}\n\n`)
    }
    if (options.done ?? true) events.push("data: [DONE]\n\n")
    yield* flush(true)
    yield* end(res)
  })
