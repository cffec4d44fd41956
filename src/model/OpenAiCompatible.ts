/**
 * A real model over HTTP: the OpenAI chat-completions protocol, which OpenAI, Azure OpenAI,
 * OpenRouter, Groq, Together, Mistral and the local servers (Ollama, llama.cpp, vLLM, LM Studio)
 * all speak. It is an {@link AiModel.AiModel} layer on `@effect/platform`'s `HttpClient`: you
 * provide the client (`NodeHttpClient.layerUndici` on Node, `FetchHttpClient.layer` anywhere),
 * and every policy of wiz-effect (retry, breaker, timeout, fallback, hedging, budgets) works on
 * it through the typed {@link AiModel.ModelError}s it fails with.
 *
 * - `generate` posts `{baseUrl}/chat/completions` and reads the JSON answer; `stream` asks for
 *   `stream: true` with `stream_options.include_usage` and decodes the Server-Sent Events as
 *   they arrive: `data:` lines cut anywhere by the network (mid-line, mid-UTF-8 character), the
 *   `[DONE]` marker, the usage chunk, and an `error` event after a 200. A body that ends without
 *   `[DONE]` fails with `IncompleteStream`, carrying the text delivered so far.
 * - HTTP errors become typed errors by {@link HttpErrors.fromResponse} (429 `RateLimited`, 503 /
 *   529 `Overloaded`, 401 / 403 `AuthenticationFailed`, a context-length 400 `InvalidRequest`
 *   with `contextLengthExceeded`, `x-should-retry` honoured); a connection that fails is
 *   `Unavailable`, its reason and `code` saying why (`ECONNREFUSED`, `UND_ERR_SOCKET`,
 *   `HPE_INVALID_CONSTANT`, `UND_ERR_HEADERS_OVERFLOW`, a TLS code: never a bare "fetch
 *   failed"); a body that is not the API's JSON (an HTML error page from a proxy, bad JSON) is
 *   `MalformedResponse`.
 * - Every response's rate-limit headers ({@link RateLimitHeaders}) fill the completion's
 *   `rateLimits` (the final chunk's, when streaming) and a 429's `retryAfter`.
 * - Limits against a hostile or broken server: a maximum body size, counted in decoded bytes
 *   as they arrive (a gzip, deflate or br body that `fetch` inflates is stopped the moment it
 *   passes the limit: its `content-length` is only its compressed size), for whole answers,
 *   event streams and error bodies; an event-stream line length; a streamed answer past
 *   `maxTokensOverrun` times its `maxTokens`; timeouts on Effect's `Clock` for the whole answer,
 *   for a stream's response head, its first byte and each silence after it.
 * - Redirects by our rule, not the client's: a 307 or 308 to the configured origin is followed
 *   (the same POST, the same body) up to `maxRedirects` times; a redirect to another origin, or
 *   a 301, 302 or 303 (which would turn the POST into a GET without its prompt), fails the call
 *   with a `ProviderError` naming where it pointed. So the key and the prompt go nowhere but the
 *   configured origin. On `FetchHttpClient`, each request is sent with the
 *   `FetchHttpClient.RequestInit` in the model's context when it was made (if any) and
 *   `redirect: "manual"`, so that `fetch` hands redirects to this rule.
 * - The API key is a `Redacted`: it is sent only in the `Authorization` header (which
 *   `@effect/platform` redacts from its spans), and is scrubbed from every error's text, before
 *   any text is cut to length, with any run of 8 of its characters counting as the key.
 * - The HTTP client's span, and the `traceparent` header it sends, only under a tracer that
 *   records spans (`Effect.withTracer`, an OpenTelemetry layer): Effect's default tracer keeps
 *   them nowhere, and the span is a sizeable part of a request's cost on a fast network.
 *
 * Options that are durations accept any `Duration.DurationInput`; a timeout of
 * `Duration.infinity` turns that timeout off.
 *
 * @example
 * ```ts
 * import { NodeHttpClient } from "@effect/platform-node"
 * import { Config, Effect, Layer } from "effect"
 * import { AiModel, OpenAiCompatible } from "wiz-effect"
 *
 * const Model = OpenAiCompatible.layerConfig({
 *   baseUrl: Config.withDefault(Config.string("OPENAI_BASE_URL"), "https://api.openai.com/v1"),
 *   model: Config.withDefault(Config.string("OPENAI_MODEL"), "gpt-4o-mini"),
 *   apiKey: Config.redacted("OPENAI_API_KEY")
 * }).pipe(Layer.provide(NodeHttpClient.layerUndici))
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   return yield* model.generate(new AiModel.CompletionRequest({ prompt: "Say hello.", maxTokens: 16 }))
 * }).pipe(Effect.provide(Model))
 * ```
 *
 * @since 0.1.0
 */
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as Headers from "@effect/platform/Headers"
import * as HttpBody from "@effect/platform/HttpBody"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import { Cause, Channel, Chunk, Clock, Config, ConfigError, Duration, Effect, Exit, identity, Layer, Option, Redacted, Scope, Stream } from "effect"
import type { Fiber } from "effect"
import { durationUntil } from "../internal/sleepUntil.js"
import * as Sse from "../internal/sse.js"
import { attempt as attemptTimeout } from "../policy/Timeout.js"
import * as AiModel from "./AiModel.js"
import * as HttpErrors from "./HttpErrors.js"
import * as RateLimitHeaders from "./RateLimitHeaders.js"
import * as Tokenizer from "./Tokenizer.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The API's base URL, up to and without `/chat/completions`: `https://api.openai.com/v1`, `http://localhost:11434/v1`. */
  readonly baseUrl: string
  /** The model to ask for (the request's `model` field). */
  readonly model: string
  /** Sent as `Authorization: Bearer <key>`; none for a local server that needs none. */
  readonly apiKey?: Redacted.Redacted<string> | undefined
  /** Sent as `OpenAI-Organization`. */
  readonly organization?: string | undefined
  /**
   * More request headers (`OpenAI-Project`, a gateway's own). A `Redacted` value is kept out of
   * spans and errors like the key: use it for Azure's `api-key` header.
   */
  readonly headers?: Readonly<Record<string, string | Redacted.Redacted<string>>> | undefined
  /** The service's name, used in errors, completions and breaker keys; defaults to `model`. */
  readonly name?: string | undefined
  /** More fields of the request body (`top_p`, `seed`, `stop`, ...), merged under the ones this module sets. */
  readonly body?: Readonly<Record<string, unknown>> | undefined
  /** The body field for `maxTokens`: OpenAI's reasoning models want `max_completion_tokens`. */
  readonly maxTokensField?: "max_tokens" | "max_completion_tokens" | undefined
  /** Ask a stream for its usage chunk (`stream_options.include_usage`); off for a server that refuses the field. */
  readonly streamUsage?: boolean | undefined
  /**
   * The largest body read, whole or streamed, in bytes as decoded (a compressed body is counted
   * as it inflates); beyond it the call fails with `MalformedResponse`.
   */
  readonly maxResponseBytes?: number | undefined
  /**
   * The largest whole answer (`generate`, or a server that answers a stream with the whole
   * JSON), in bytes as decoded, never more than `maxResponseBytes`. A whole answer is held in
   * memory while it is read (a stream's events are not), so calls in flight × this bounds what
   * a batch can be made to hold; beyond it the call fails with `MalformedResponse`.
   */
  readonly maxAnswerBytes?: number | undefined
  /** The longest event-stream line, in characters; beyond it the stream fails with `MalformedResponse`. */
  readonly maxLineLength?: number | undefined
  /** Redirects followed (307 and 308 to the same origin only) before the call fails. */
  readonly maxRedirects?: number | undefined
  /**
   * A streamed answer may run to this many times the `maxTokens` it asked for, plus 64 tokens
   * (estimated with {@link Tokenizer.count}); past that it fails with `MalformedResponse` naming
   * the bound: a server that ignores `max_tokens` would otherwise stream until `maxResponseBytes`.
   * `Infinity` turns the bound off.
   */
  readonly maxTokensOverrun?: number | undefined
  /** `generate`: time from sending the request to the end of the answer. */
  readonly requestTimeout?: Duration.DurationInput | undefined
  /** `stream`: time from sending the request to the response's status and headers. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** `stream`: time from the response's head to the first bytes of its body (the first token). */
  readonly firstByteTimeout?: Duration.DurationInput | undefined
  /** `stream`: the longest silence between two pieces of the body, once it has started. */
  readonly idleTimeout?: Duration.DurationInput | undefined
}

/**
 * - `maxTokensField: "max_tokens"`: every compatible server knows it.
 * - `streamUsage: true`: OpenAI, vLLM, llama.cpp, Ollama and OpenRouter honour it; without it a
 *   stream's usage is estimated with {@link Tokenizer.count}.
 * - `maxResponseBytes: 8 MiB`: a long answer streamed is ~1 MiB of events; a body past 8 MiB is
 *   a broken or hostile server.
 * - `maxAnswerBytes: 2 MiB`: a whole answer carries no per-token envelope, so 2 MiB is hundreds
 *   of thousands of tokens; eight answers in flight (`wiz run`'s default) hold 16 MiB at most.
 * - `maxLineLength: 1 Mi` characters: one event is one line of JSON, a few hundred bytes.
 * - `maxRedirects: 5`.
 * - `maxTokensOverrun: 4`: an answer is cut at `maxTokens` by any server that honours it; the
 *   estimate can run up to ~3× a real tokenizer's count on text that is mostly punctuation (a
 *   markdown table), so four times (and 64 tokens more, for a small `maxTokens`) ends only a
 *   server that ignores it: 1,088 tokens for the default 256.
 * - `requestTimeout: 10 minutes` (openai-node's default): a whole answer of thousands of
 *   tokens can take minutes; put a shorter per-attempt timeout around it (AgentService does).
 * - `connectTimeout: 10 s`: a streaming server sends its head before it generates.
 * - `firstByteTimeout: 60 s`: a long prompt on a busy server is slow to its first token.
 * - `idleTimeout: 60 s`: providers send keep-alive comments well within that.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxTokensField: "max_tokens",
  streamUsage: true,
  maxResponseBytes: 8 * 1024 * 1024,
  maxAnswerBytes: 2 * 1024 * 1024,
  maxLineLength: 1024 * 1024,
  maxRedirects: 5,
  maxTokensOverrun: 4,
  requestTimeout: Duration.minutes(10),
  connectTimeout: Duration.seconds(10),
  firstByteTimeout: Duration.seconds(60),
  idleTimeout: Duration.seconds(60)
} as const

/**
 * The model service over the `HttpClient` in context. Fails with a `ConfigError` when
 * `baseUrl` is not an `http(s)` URL or a limit is not a positive number.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<AiModel.AiModel.Service, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Effect.flatMap(HttpClient.HttpClient, (client) =>
    Effect.flatMap(Effect.serviceOption(FetchHttpClient.RequestInit), (init) =>
      Effect.suspend(() => {
        const invalid = validate(options)
        return invalid === undefined ? Effect.succeed(build(client, options, Option.getOrUndefined(init))) : Effect.fail(invalid)
      })))

/**
 * The model as the {@link AiModel.AiModel} service, on the `HttpClient` the caller provides.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<AiModel.AiModel, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(AiModel.AiModel, make(options))

/**
 * The model as a layer, its options read from Effect `Config` (each option a `Config` of its
 * own: `Config.redacted("OPENAI_API_KEY")` for the key).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<AiModel.AiModel, ConfigError.ConfigError, HttpClient.HttpClient> =>
  Layer.effect(AiModel.AiModel, Effect.flatMap(Config.unwrap(options), make))

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

const validate = (options: Options): ConfigError.ConfigError | undefined => {
  let url: URL
  try {
    url = new URL(options.baseUrl)
  } catch {
    return ConfigError.InvalidData(["baseUrl"], `baseUrl is not a URL: ${JSON.stringify(options.baseUrl)}`)
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return ConfigError.InvalidData(["baseUrl"], `baseUrl is not an http(s) URL: ${JSON.stringify(options.baseUrl)}`)
  }
  if (options.model.trim() === "") return ConfigError.InvalidData(["model"], "model is empty")
  for (const key of ["maxResponseBytes", "maxAnswerBytes", "maxLineLength"] as const) {
    const value = options[key]
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
      return ConfigError.InvalidData([key], `${key} must be a positive integer (got ${value})`)
    }
  }
  if (options.maxRedirects !== undefined && !(Number.isInteger(options.maxRedirects) && options.maxRedirects >= 0)) {
    return ConfigError.InvalidData(["maxRedirects"], `maxRedirects must be a non-negative integer (got ${options.maxRedirects})`)
  }
  if (options.maxTokensOverrun !== undefined && !(options.maxTokensOverrun >= 1)) {
    return ConfigError.InvalidData(["maxTokensOverrun"], `maxTokensOverrun must be a number >= 1 (got ${options.maxTokensOverrun})`)
  }
  return undefined
}

/** The redirect statuses. */
const redirects: ReadonlySet<number> = new Set([301, 302, 303, 307, 308])

/** The redirects that keep the method and the body: the only ones followed (the same POST again). */
const keepsMethod: ReadonlySet<number> = new Set([307, 308])

/** Error bodies are read up to this much: enough for any API's JSON, and for an HTML page's title. */
const maxErrorBodyBytes = 64 * 1024

const utf8 = new TextDecoder("utf-8")

/** Effect's default tracer, which records no span. */
const nativeTracer = Effect.runSync(Effect.tracer)

const build = (
  client: HttpClient.HttpClient,
  options: Options,
  fetchInit: globalThis.RequestInit | undefined
): AiModel.AiModel.Service => {
  const name = options.name ?? options.model
  const endpoint = new URL(`${options.baseUrl.replace(/\/+$/, "")}/chat/completions`)
  const maxResponseBytes = options.maxResponseBytes ?? defaults.maxResponseBytes
  const maxAnswerBytes = Math.min(options.maxAnswerBytes ?? defaults.maxAnswerBytes, maxResponseBytes)
  const maxLineLength = options.maxLineLength ?? defaults.maxLineLength
  const maxRedirects = options.maxRedirects ?? defaults.maxRedirects
  const maxTokensOverrun = options.maxTokensOverrun ?? defaults.maxTokensOverrun
  // `fetch` would follow redirects by its own rules (a 302 turns the POST into a GET, another
  // origin gets the prompt): it hands them to `send` instead, which follows ours.
  const manualRedirects: globalThis.RequestInit = { ...fetchInit, redirect: "manual" }
  const maxTokensField = options.maxTokensField ?? defaults.maxTokensField
  const streamUsage = options.streamUsage ?? defaults.streamUsage
  const limitWhole = attemptTimeout({ duration: options.requestTimeout ?? defaults.requestTimeout, model: name })
  const limits: Limits = {
    head: Duration.decode(options.connectTimeout ?? defaults.connectTimeout),
    first: Duration.decode(options.firstByteTimeout ?? defaults.firstByteTimeout),
    idle: Duration.decode(options.idleTimeout ?? defaults.idleTimeout)
  }

  // Headers, once. Secret values go to `secrets` (scrubbed from errors) and their header names
  // to the names @effect/platform redacts from its spans.
  const secrets: Array<string> = []
  const secretHeaders: Array<string> = []
  const headers: Record<string, string> = { "content-type": "application/json" }
  if (options.apiKey !== undefined) {
    const key = Redacted.value(options.apiKey)
    secrets.push(key)
    headers["authorization"] = `Bearer ${key}`
  }
  if (options.organization !== undefined) headers["openai-organization"] = options.organization
  for (const [header, value] of Object.entries(options.headers ?? {})) {
    if (Redacted.isRedacted(value)) {
      const secret = Redacted.value(value) as string
      secrets.push(secret)
      secretHeaders.push(header.toLowerCase())
      headers[header.toLowerCase()] = secret
    } else {
      headers[header.toLowerCase()] = value
    }
  }
  const base = HttpClientRequest.setHeaders(HttpClientRequest.post(endpoint), headers)
  const wholeBase = HttpClientRequest.setHeader(base, "accept", "application/json")
  const streamBase = HttpClientRequest.setHeader(base, "accept", "text/event-stream")
  const extraBody = options.body ?? {}

  const body = (request: AiModel.CompletionRequest, stream: boolean): HttpBody.HttpBody => {
    const turns: ReadonlyArray<AiModel.Message> = request.messages ?? [{ role: "user", content: request.prompt }]
    const messages = request.system === undefined ? turns : [{ role: "system", content: request.system }, ...turns]
    const json: Record<string, unknown> = { ...extraBody, model: options.model, messages, [maxTokensField]: request.maxTokens }
    if (request.temperature !== undefined) json["temperature"] = request.temperature
    if (stream) {
      json["stream"] = true
      if (streamUsage) json["stream_options"] = { include_usage: true }
    }
    return HttpBody.text(JSON.stringify(json), "application/json")
  }

  const scrub = (text: string) => HttpErrors.scrub(text, secrets)

  const transport = (error: HttpClientError.HttpClientError): AiModel.ModelError => {
    const cause = describe(error)
    return error._tag === "RequestError" && error.reason !== "Transport"
      ? new AiModel.InvalidRequest({ model: name, reason: scrub(`the request could not be sent: ${cause.text}`) })
      : new AiModel.Unavailable({ model: name, reason: scrub(cause.text), ...(cause.code === undefined ? {} : { code: scrub(cause.code) }) })
  }

  /** A redirect not followed: the call fails, naming where it was sent (scrubbed: the server wrote it). */
  const refuse = (response: HttpClientResponse.HttpClientResponse, reason: string) =>
    Effect.zipRight(
      discard(response),
      Effect.fail(new AiModel.ProviderError({ model: name, status: response.status, reason: scrub(reason) }))
    )

  /**
   * Sends `request` on `via`, following 307 and 308 redirects to the configured origin with the
   * same method and body, at most `maxRedirects` times. Any other redirect fails the call
   * naming its location: one to another origin (the key and the prompt stay here), and a 301,
   * 302 or 303, which would turn the POST into a GET without its prompt.
   */
  const send = <R>(
    via: HttpClient.HttpClient.With<HttpClientError.HttpClientError, R>,
    request: HttpClientRequest.HttpClientRequest
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, AiModel.ModelError, R> => {
    const go = (
      current: HttpClientRequest.HttpClientRequest,
      hops: number
    ): Effect.Effect<HttpClientResponse.HttpClientResponse, AiModel.ModelError, R> =>
      Effect.flatMap(
        Effect.mapError(Effect.provideService(via.execute(current), FetchHttpClient.RequestInit, manualRedirects), transport),
        (response) => {
          if (!redirects.has(response.status)) return Effect.succeed(response)
          const location = response.headers["location"]
          if (location === undefined) return Effect.succeed(response)
          let target: URL
          try {
            target = new URL(location, current.url)
          } catch {
            return Effect.zipRight(
              discard(response),
              Effect.fail(new AiModel.MalformedResponse({ model: name, reason: `a redirect to an invalid location` }))
            )
          }
          if (target.origin !== endpoint.origin) {
            const where = target.host === endpoint.host ? "another origin" : "another host"
            return refuse(response, `redirected to ${where} (${target.origin}); not followed, so the API key stays with ${endpoint.origin}`)
          }
          if (!keepsMethod.has(response.status)) {
            return refuse(
              response,
              `a ${response.status} redirect to ${target.href} would send a GET without the prompt; not followed (only 307 and 308 keep the POST)`
            )
          }
          if (hops >= maxRedirects) return refuse(response, `more than ${maxRedirects} redirects`)
          return Effect.zipRight(discard(response), go(HttpClientRequest.setUrl(current, target), hops + 1))
        }
      )
    const sent = go(request, 0)
    const redacted = secretHeaders.length === 0
      ? sent
      : Effect.locallyWith(sent, Headers.currentRedactedNames, (names) => [...names, ...secretHeaders])
    // The client's span (and its trace headers) only when a tracer records spans: Effect's
    // default tracer records nothing, and the span costs ~50 µs of a request.
    return Effect.withFiberRuntime((fiber) =>
      fiber.currentTracer === nativeTracer ? Effect.withTracerEnabled(redacted, false) : redacted
    )
  }

  /** The typed error of a response whose status is not 2xx. */
  const failure = (response: HttpClientResponse.HttpClientResponse, startedAt: number) =>
    Effect.flatMap(
      Effect.orElseSucceed(readText(response, maxErrorBodyBytes, "truncate"), () => ""),
      (text) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.fail(HttpErrors.fromResponse({
            model: name,
            status: response.status,
            headers: response.headers,
            body: text,
            now,
            elapsed: Duration.millis(Math.max(0, now - startedAt)),
            secrets
          })))
    )

  const tooLarge = () =>
    new AiModel.MalformedResponse({ model: name, reason: `the response body is larger than ${maxAnswerBytes} bytes` })

  /** Reads a whole 2xx body and turns it into a completion. */
  const readCompletion = (
    response: HttpClientResponse.HttpClientResponse,
    request: AiModel.CompletionRequest
  ): Effect.Effect<AiModel.Completion, AiModel.ModelError> => {
    const headers = response.headers
    return readText(response, maxAnswerBytes, "fail").pipe(
      Effect.mapError((error) => {
        if (error === "too-large") return tooLarge()
        const cause = describe(error)
        return new AiModel.Unavailable({
          model: name,
          reason: scrub(`the connection broke while reading the answer: ${cause.text}`),
          ...(cause.code === undefined ? {} : { code: scrub(cause.code) })
        })
      }),
      Effect.flatMap((text) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const parsed = parseCompletion(text, headers["content-type"], secrets)
          if (typeof parsed === "string") return Effect.fail(new AiModel.MalformedResponse({ model: name, reason: scrub(parsed) }))
          if (parsed._tag === "Error") {
            return Effect.fail(
              HttpErrors.fromErrorEvent(name, HttpErrors.readErrorBody(JSON.stringify(parsed.error), secrets), undefined) ??
                new AiModel.ProviderError({
                  model: name,
                  status: response.status,
                  reason: quote(parsed.message, secrets, HttpErrors.defaults.maxReasonLength)
                })
            )
          }
          const rateLimits = RateLimitHeaders.rateLimits(headers, now)
          return Effect.succeed(
            new AiModel.Completion({
              text: parsed.text,
              finishReason: parsed.finishReason,
              usage: parsed.usage ?? estimate(request, parsed.text),
              model: name,
              ...(rateLimits === undefined ? {} : { rateLimits })
            }, true)
          )
        })
      )
    )
  }

  const generate = (request: AiModel.CompletionRequest): Effect.Effect<AiModel.Completion, AiModel.ModelError> =>
    limitWhole(
      Effect.flatMap(Clock.currentTimeMillis, (startedAt) =>
        Effect.flatMap(send(client, HttpClientRequest.setBody(wholeBase, body(request, false))), (response) =>
          response.status >= 200 && response.status < 300
            ? readCompletion(response, request)
            : failure(response, startedAt)))
    )

  // A stream's request lives in a scope of its own, so its watchdog can abort it (closing the
  // scope aborts the request) without a fiber per pull.
  const scopedClient = HttpClient.withScope(client)

  type Out = Channel.Channel<Chunk.Chunk<AiModel.CompletionChunk>, unknown, AiModel.ModelError, unknown, unknown, unknown>

  // One channel: the set-up, then the body's own channel piped into the decoder, in the
  // consumer's executor (no second executor as `Stream.toPull` + `Stream.fromPull` make).
  const stream = (request: AiModel.CompletionRequest): Stream.Stream<AiModel.CompletionChunk, AiModel.ModelError> =>
    Stream.fromChannel(Channel.unwrap(Effect.map(Scope.make(), (requestScope) => {
      const close = Scope.close(requestScope, Exit.void)
      const call: Call = { watch: undefined, requestScope, close }
      return Channel.ensuring(
        Channel.flatMap(Channel.fromEffect(setUp(request, call)), identity),
        Effect.zipRight(Effect.sync(() => call.watch?.finish()), close)
      )
    })))

  /** One streamed call's request scope (closing it aborts the request) and its watchdog, once set up. */
  interface Call {
    watch: Watch | undefined
    readonly requestScope: Scope.CloseableScope
    readonly close: Effect.Effect<void>
  }

  const setUp = (request: AiModel.CompletionRequest, call: Call): Effect.Effect<Out, AiModel.ModelError> =>
    Effect.gen(function*() {
      const clock = yield* Effect.clock
      const startedAt = clock.unsafeCurrentTimeMillis()
      const watch = new Watch(clock, limits, call.close)
      call.watch = watch
      const timedOut = (error: AiModel.ModelError): AiModel.ModelError =>
        watch.fired === undefined ? error : new AiModel.ModelTimeout({ model: name, timeout: watch.fired })
      yield* watch.begin("head")
      const response = yield* send(scopedClient, HttpClientRequest.setBody(streamBase, body(request, true))).pipe(
        Scope.extend(call.requestScope),
        Effect.mapError(timedOut)
      )
      yield* watch.begin("first")
      if (response.status < 200 || response.status >= 300) return yield* Effect.mapError(failure(response, startedAt), timedOut)
      // The client may build its headers object on each read (undici's does): read them once.
      const headers = response.headers
      const contentType = headers["content-type"] ?? ""
      // A server that ignored `stream: true` answers with the whole completion.
      if (contentType.includes("application/json")) {
        const completion = yield* Effect.mapError(readCompletion(response, request), timedOut)
        watch.finish()
        return Channel.write(Chunk.of(toChunk(completion)))
      }
      if (contentType.includes("text/html")) {
        const text = yield* Effect.orElseSucceed(readText(response, maxErrorBodyBytes, "truncate"), () => "")
        return yield* Effect.fail(
          new AiModel.MalformedResponse({
            model: name,
            reason: `expected an event stream, got ${quote(HttpErrors.readErrorBody(text, secrets).message, secrets, HttpErrors.defaults.maxReasonLength)}`
          })
        )
      }
      return Channel.pipeTo(Stream.toChannel(response.stream), decoder(headers, request, watch, clock.unsafeCurrentTimeMillis()))
    })

  /**
   * The channel from a streamed answer's body bytes to its chunks. After `[DONE]` it reads the
   * body to its end (within the idle limit), so the connection can be reused.
   */
  const decoder = (
    headers: Headers.Headers,
    request: AiModel.CompletionRequest,
    watch: Watch,
    receivedAt: number
  ): Channel.Channel<Chunk.Chunk<AiModel.CompletionChunk>, Chunk.Chunk<Uint8Array>, AiModel.ModelError, HttpClientError.ResponseError, unknown, unknown> => {
    type Step = Channel.Channel<Chunk.Chunk<AiModel.CompletionChunk>, Chunk.Chunk<Uint8Array>, AiModel.ModelError, HttpClientError.ResponseError, unknown, unknown>
    const state = new StreamState(name, maxLineLength, maxResponseBytes, secrets, request.maxTokens, maxTokensOverrun)
    const rateLimits = RateLimitHeaders.rateLimits(headers, receivedAt)
    let emitted = false

    const final = (): AiModel.CompletionChunk => {
      emitted = true
      return new AiModel.CompletionChunk({
        delta: "",
        finishReason: state.finishReason ?? "stop",
        usage: state.usage ?? estimate(request, state.text),
        ...(rateLimits === undefined ? {} : { rateLimits })
      }, true)
    }
    const stop = (error?: AiModel.ModelError): Step => {
      watch.finish()
      return error === undefined ? Channel.void : Channel.fail(error)
    }
    const then = (out: Array<AiModel.CompletionChunk>, next: Step): Step =>
      out.length === 0 ? next : Channel.flatMap(Channel.write(Chunk.unsafeFromArray(out)), () => next)

    /** Reads the next piece of the body, once the wait for it is timed. */
    const next = (phase: Phase): Step => {
      const timing = watch.begin(phase)
      return timing === Effect.void ? read : Channel.flatMap(Channel.fromEffect(timing), () => read)
    }
    const onInput = (bytes: Chunk.Chunk<Uint8Array>): Step => {
      watch.arrived()
      if (emitted) return next("drain")
      const out: Array<AiModel.CompletionChunk> = []
      for (const piece of bytes) {
        const error = state.push(piece, out)
        if (error !== undefined) return then(out, stop(error))
        if (state.done) {
          out.push(final())
          return then(out, next("drain"))
        }
      }
      return then(out, next("idle"))
    }
    const onFailure = (cause: Cause.Cause<HttpClientError.ResponseError>): Step => {
      watch.arrived()
      const failure = Cause.failureOption(cause)
      if (Option.isNone(failure)) return Channel.failCause(cause as Cause.Cause<never>)
      // Past [DONE], an error (the watchdog's abort included) only ends the reading.
      if (emitted) return stop()
      if (watch.fired !== undefined) return stop(new AiModel.ModelTimeout({ model: name, timeout: watch.fired }))
      return stop(
        new AiModel.IncompleteStream({ model: name, partial: state.text, reason: scrub(`the connection broke: ${describe(failure.value).text}`) })
      )
    }
    /** The body ended: the bytes left decode to the last chunks, or the stream was cut short. */
    const onDone = (): Step => {
      watch.arrived()
      if (emitted) return stop()
      if (watch.fired !== undefined) return stop(new AiModel.ModelTimeout({ model: name, timeout: watch.fired }))
      const out: Array<AiModel.CompletionChunk> = []
      const error = state.end(out)
      if (error !== undefined) return then(out, stop(error))
      if (state.done) {
        out.push(final())
        return then(out, stop())
      }
      return then(out, stop(new AiModel.IncompleteStream({ model: name, partial: state.text, reason: "the event stream ended without [DONE]" })))
    }
    const read: Step = Channel.readWithCause({ onInput, onFailure, onDone })
    return read
  }

  return { name, generate, stream }
}

/** What went wrong on the wire, as a transport's error says it, and its code. */
interface Described {
  readonly text: string
  readonly code: string | undefined
}

/**
 * The cause of a transport error, from the deepest error that says more than its wrapper:
 * `fetch` fails with a bare "fetch failed" whose `cause` (and its `cause`) holds the real
 * error and its code (`ECONNREFUSED`, `UND_ERR_SOCKET`, `HPE_INVALID_CONSTANT`,
 * `UND_ERR_HEADERS_OVERFLOW`, a TLS code); a refused connection to a name with several
 * addresses is an `AggregateError` whose code is on it and whose messages are on its errors.
 */
const describe = (error: unknown): Described => {
  const messages: Array<string> = []
  let code: string | undefined
  let at: unknown = error
  for (let depth = 0; depth < 8 && typeof at === "object" && at !== null; depth++) {
    const found = at as { readonly cause?: unknown; readonly code?: unknown; readonly errors?: unknown; readonly message?: unknown }
    if (typeof found.code === "string" && found.code !== "") code = found.code
    let message = depth === 0 ? ownText(at) : typeof found.message === "string" ? found.message : ""
    if (message === "" && Array.isArray(found.errors)) {
      message = found.errors.map((inner) => (inner instanceof Error ? inner.message : String(inner))).filter((m) => m !== "").join("; ")
    }
    message = message.replace(/\s+/g, " ").trim()
    if (message !== "" && !messages.some((known) => known.includes(message))) messages.push(message)
    at = found.cause
  }
  if (messages.length === 0 && error !== null && typeof error !== "object") messages.push(String(error))
  const text = messages.join(": ") || "no cause given"
  code ??= parserCode(text)
  return { text: code === undefined || text.includes(code) ? text : `${text} (${code})`, code }
}

/**
 * undici 7's parser errors lose their code (`HTTPParserError` with `code: undefined`); llhttp's
 * reason still says what it was: an answer that does not start as HTTP.
 */
const parserCode = (text: string): string | undefined =>
  /does not match the HTTP\/1\.1 protocol \(Expected HTTP\//.test(text) ? "HPE_INVALID_CONSTANT" : undefined

/** What an `@effect/platform` client error says of itself, without the request it names. */
const ownText = (error: unknown): string => {
  const found = error as { readonly description?: unknown; readonly reason?: unknown; readonly cause?: unknown }
  if (typeof found.description === "string") return found.description
  // A Transport error's own message is its request; its cause says what went wrong.
  if (found.cause !== undefined) return ""
  if (typeof found.reason === "string") return found.reason
  return error instanceof Error ? error.message : ""
}

/** Stops reading a response we will not use; the client then releases its connection. */
const discard = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> =>
  Effect.ignore(Stream.runDrain(Stream.take(response.stream, 0)))

/**
 * A body as text, at most `limit` bytes counted as they arrive, decoded: past it, reading
 * stops at once (the client cancels the rest), and `"fail"` fails with `"too-large"` while
 * `"truncate"` returns the first `limit` bytes. A `content-length` is the size on the wire: a
 * compressed body (`fetch` inflates gzip, deflate and br) can be a thousand times larger, so it
 * is trusted only for a body with no content-encoding, whose framing guarantees the size (read
 * with the client's own `text` when within the limit, refused unread when past it).
 */
const readText = (
  response: HttpClientResponse.HttpClientResponse,
  limit: number,
  over: "fail" | "truncate"
): Effect.Effect<string, HttpClientError.ResponseError | "too-large"> => {
  const encoding = response.headers["content-encoding"]
  if (encoding === undefined || encoding.trim().toLowerCase() === "identity") {
    const declared = response.headers["content-length"]
    const length = declared === undefined ? NaN : Number(declared)
    if (length <= limit) return response.text
    if (length > limit && over === "fail") return Effect.zipRight(discard(response), Effect.fail("too-large" as const))
  }
  return Effect.flatMap(
    Stream.runFoldWhile(
      response.stream,
      { parts: [] as Array<Uint8Array>, size: 0, over: false },
      (s) => !s.over,
      (s, bytes) => {
        if (s.size + bytes.length > limit) {
          s.over = true
          if (over === "truncate") s.parts.push(bytes.subarray(0, limit - s.size))
        } else {
          s.parts.push(bytes)
        }
        s.size += bytes.length
        return s
      }
    ),
    (s) => s.over && over === "fail" ? Effect.fail("too-large" as const) : Effect.succeed(decode(s.parts))
  )
}

const decode = (parts: ReadonlyArray<Uint8Array>): string => {
  if (parts.length === 1) return utf8.decode(parts[0])
  let size = 0
  for (const part of parts) size += part.length
  const all = new Uint8Array(size)
  let at = 0
  for (const part of parts) {
    all.set(part, at)
    at += part.length
  }
  return utf8.decode(all)
}

/** The limits of a streamed call's waits: for the response head, its first bytes, each later piece. */
interface Limits {
  readonly head: Duration.Duration
  readonly first: Duration.Duration
  readonly idle: Duration.Duration
}

/** What a streamed call is waiting for. `drain`: the rest of the body after `[DONE]`, under the idle limit. */
type Phase = "head" | "first" | "idle" | "drain"

/**
 * The timeouts of one streamed call, on one fiber instead of a timer per pull. The reader marks
 * each wait (`begin`, then `arrived`); the watchdog sleeps on the `Clock` until the current
 * wait's deadline and, if it is still waiting then, records the limit in `fired` and runs
 * `abort` (closing the request's scope, which aborts it), so the pending read fails and the
 * reader reports `ModelTimeout`. A watchdog that wakes before the current deadline (a later
 * wait moved it) just sleeps again, so it is restarted only when a wait's deadline comes
 * before the one it sleeps to (a first-byte limit shorter than the head's, say): with the
 * defaults, one fiber times the whole call. The stream's finalizer ends it.
 */
class Watch {
  phase: Phase = "head"
  /** The limit that ran out, once one has. */
  fired: Duration.Duration | undefined = undefined
  private waiting = false
  private since = 0
  /** When the running watchdog wakes next (its sleep's end), in Clock milliseconds. */
  private wakeAt = 0
  private finished = false
  private fiber: Fiber.RuntimeFiber<void> | undefined = undefined

  constructor(
    private readonly clock: Clock.Clock,
    private readonly limits: Limits,
    private readonly abort: Effect.Effect<void>
  ) {}

  /**
   * A wait starts now. The watchdog is (re)started only when none runs, or when this wait's
   * deadline comes before the running one wakes.
   */
  begin(phase: Phase): Effect.Effect<void> {
    if (this.finished) return Effect.void
    this.phase = phase
    this.waiting = true
    this.since = this.clock.unsafeCurrentTimeMillis()
    const limit = this.limit()
    const finite = Duration.isFinite(limit)
    const due = finite ? this.since + Duration.toMillis(limit) : Infinity
    if (this.fiber !== undefined && due >= this.wakeAt) return Effect.void
    const running = this.fiber
    this.fiber = undefined
    running?.unsafeInterruptAsFork(running.id())
    if (!finite) return Effect.void
    this.wakeAt = due
    // A daemon (cheaper than forking into a scope); `finish`, which the stream's finalizer
    // runs, interrupts it.
    return Effect.map(Effect.forkDaemon(this.loop), (fiber) => {
      if (this.finished) fiber.unsafeInterruptAsFork(fiber.id())
      else this.fiber = fiber
    })
  }

  /** The awaited bytes (or the end) came. */
  arrived(): void {
    this.waiting = false
  }

  /** The call is over: nothing more to time. */
  finish(): void {
    this.finished = true
    this.waiting = false
    const running = this.fiber
    this.fiber = undefined
    running?.unsafeInterruptAsFork(running.id())
  }

  private limit(): Duration.Duration {
    return this.phase === "head" ? this.limits.head : this.phase === "first" ? this.limits.first : this.limits.idle
  }

  private readonly loop: Effect.Effect<void> = Effect.suspend(() => {
    if (this.finished || !this.waiting) {
      this.fiber = undefined
      return Effect.void
    }
    const limit = this.limit()
    if (!Duration.isFinite(limit)) {
      this.fiber = undefined
      return Effect.void
    }
    const due = this.since + Duration.toMillis(limit)
    const now = this.clock.unsafeCurrentTimeMillis()
    if (now >= due) {
      this.fired = limit
      this.fiber = undefined
      return this.abort
    }
    this.wakeAt = due
    return Effect.zipRight(this.clock.sleep(durationUntil(now, due)), this.loop)
  })
}

const estimate = (request: AiModel.CompletionRequest, text: string): AiModel.Usage =>
  new AiModel.Usage({
    promptTokens: Tokenizer.count(request.system === undefined ? request.prompt : `${request.system}\n${request.prompt}`),
    completionTokens: Tokenizer.count(text)
  }, true)

const toChunk = (completion: AiModel.Completion): AiModel.CompletionChunk =>
  new AiModel.CompletionChunk({
    delta: completion.text,
    finishReason: completion.finishReason,
    usage: completion.usage,
    ...(completion.rateLimits === undefined ? {} : { rateLimits: completion.rateLimits })
  }, true)

// -----------------------------------------------------------------------------
// the protocol's JSON
// -----------------------------------------------------------------------------

type Parsed =
  | { readonly _tag: "Completion"; readonly text: string; readonly finishReason: AiModel.FinishReason; readonly usage: AiModel.Usage | undefined }
  | { readonly _tag: "Error"; readonly error: unknown; readonly message: string }

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** `"length"` is the only finish reason that means the answer was cut; every other one is a stop. */
const finishReasonOf = (value: unknown): AiModel.FinishReason | undefined =>
  value === "length" ? "length" : typeof value === "string" ? "stop" : undefined

const usageOf = (value: unknown): AiModel.Usage | undefined => {
  if (!isRecord(value)) return undefined
  const prompt = value["prompt_tokens"]
  const completion = value["completion_tokens"]
  if (typeof prompt !== "number" || typeof completion !== "number" || !(prompt >= 0) || !(completion >= 0)) return undefined
  return new AiModel.Usage({ promptTokens: Math.round(prompt), completionTokens: Math.round(completion) }, true)
}

/**
 * A server's text as an error may quote it: scrubbed of the secrets first, then flattened and
 * cut to `max` characters (cut first, and a key cut in two would no longer be found whole).
 * Only its head is scrubbed: whether a piece of it is a secret depends on the few characters
 * around it, so a head some way past `max` gives the same quote as the whole text.
 */
const quote = (text: string, secrets: ReadonlyArray<string>, max: number): string => {
  const [flat, cut] = scrubbedHead(text, secrets, max)
  return cut ? `${flat}…` : flat
}

/** `text` scrubbed, flattened, then cut to `max` characters, and whether it was cut. */
const scrubbedHead = (text: string, secrets: ReadonlyArray<string>, max: number): readonly [string, boolean] => {
  const head = text.length > 4 * max + 1024 ? text.slice(0, 4 * max + 1024) : text
  const flat = HttpErrors.scrub(head, secrets).replace(/\s+/g, " ").trim()
  return flat.length <= max ? [flat, false] : [flat.slice(0, max), true]
}

/** A server's text as a JSON string of at most 80 characters (scrubbed, then cut). */
const preview = (text: string, secrets: ReadonlyArray<string>): string => {
  const [flat, cut] = scrubbedHead(text, secrets, 80)
  return cut ? `${JSON.stringify(flat)}…` : JSON.stringify(flat)
}

/** A whole answer's JSON, or why it is not one. */
const parseCompletion = (text: string, contentType: string | undefined, secrets: ReadonlyArray<string>): Parsed | string => {
  if ((contentType ?? "").includes("text/html") || /^\s*</.test(text)) {
    return `expected JSON, got ${quote(HttpErrors.readErrorBody(text, secrets).message, secrets, HttpErrors.defaults.maxReasonLength)}`
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return text.trim() === "" ? "the body is empty" : `the body is not JSON: ${preview(text, secrets)}`
  }
  if (!isRecord(json)) return `the body is not a completion object: ${preview(text, secrets)}`
  if (json["error"] !== undefined && json["error"] !== null) {
    const error = json["error"]
    return { _tag: "Error", error, message: isRecord(error) && typeof error["message"] === "string" ? error["message"] : JSON.stringify(error) }
  }
  const choices = json["choices"]
  const choice = Array.isArray(choices) ? choices[0] : undefined
  if (!isRecord(choice)) return "the completion has no choices"
  const message = choice["message"]
  if (!isRecord(message)) return "the completion's choice has no message"
  const content = message["content"]
  if (content !== undefined && content !== null && typeof content !== "string") return "the message content is not text"
  return {
    _tag: "Completion",
    text: content ?? "",
    finishReason: finishReasonOf(choice["finish_reason"]) ?? "stop",
    usage: usageOf(json["usage"])
  }
}

/** The decoding state of one streamed answer. */
class StreamState {
  text = ""
  finishReason: AiModel.FinishReason | undefined = undefined
  usage: AiModel.Usage | undefined = undefined
  done = false
  private bytes = 0
  private readonly decoder: Sse.Decoder
  private readonly events: Array<Sse.Event> = []
  /** The most tokens the answer may take: `overrun × maxTokens + 64`. */
  private readonly maxAnswerTokens: number
  /** The answer's tokens so far, counted only once its length passes `maxAnswerTokens` (-1 before). */
  private tokens = -1

  constructor(
    private readonly model: string,
    maxLineLength: number,
    private readonly maxBytes: number,
    private readonly secrets: ReadonlyArray<string>,
    private readonly maxTokens: number,
    private readonly overrun: number
  ) {
    this.decoder = new Sse.Decoder(maxLineLength)
    this.maxAnswerTokens = Math.ceil(overrun * maxTokens) + 64
  }

  /** Decodes one piece of the body, appending a chunk per text delta to `out`. */
  push(piece: Uint8Array, out: Array<AiModel.CompletionChunk>): AiModel.ModelError | undefined {
    this.bytes += piece.length
    if (this.bytes > this.maxBytes) {
      return new AiModel.MalformedResponse({ model: this.model, reason: `the event stream is larger than ${this.maxBytes} bytes` })
    }
    const tooLong = this.decoder.push(piece, this.events)
    if (tooLong !== undefined) return new AiModel.MalformedResponse({ model: this.model, reason: tooLong })
    return this.drain(out)
  }

  /** The body ended: decodes what is left. */
  end(out: Array<AiModel.CompletionChunk>): AiModel.ModelError | undefined {
    const tooLong = this.decoder.end(this.events)
    if (tooLong !== undefined) return new AiModel.MalformedResponse({ model: this.model, reason: tooLong })
    return this.drain(out)
  }

  private drain(out: Array<AiModel.CompletionChunk>): AiModel.ModelError | undefined {
    const events = this.events
    for (let i = 0; i < events.length; i++) {
      if (this.done) break
      const error = this.event(events[i]!, out)
      if (error !== undefined) {
        events.length = 0
        return error
      }
    }
    events.length = 0
    return undefined
  }

  private event(event: Sse.Event, out: Array<AiModel.CompletionChunk>): AiModel.ModelError | undefined {
    const data = event.data
    if (data === "[DONE]") {
      this.done = true
      return undefined
    }
    let json: unknown
    try {
      json = JSON.parse(data)
    } catch {
      if (event.event === "error") return this.failed(HttpErrors.readErrorBody(data, this.secrets))
      return this.malformed(`an event is not JSON: ${preview(data, this.secrets)}`)
    }
    if (!isRecord(json)) return this.malformed(`an event is not a chunk object: ${preview(data, this.secrets)}`)
    if (event.event === "error" || (json["error"] !== undefined && json["error"] !== null)) {
      return this.failed(HttpErrors.readErrorBody(data, this.secrets))
    }
    const usage = usageOf(json["usage"])
    if (usage !== undefined) this.usage = usage
    const choices = json["choices"]
    if (!Array.isArray(choices)) {
      return usage === undefined ? this.malformed(`a chunk has no choices: ${preview(data, this.secrets)}`) : undefined
    }
    const choice: unknown = choices[0]
    if (!isRecord(choice)) return undefined
    const delta = choice["delta"]
    if (isRecord(delta)) {
      const content = delta["content"]
      if (typeof content === "string" && content !== "") {
        this.text += content
        // The estimate never exceeds the number of characters: nothing to count before then.
        if (this.text.length > this.maxAnswerTokens) {
          this.tokens = this.tokens < 0 ? Tokenizer.count(this.text) : this.tokens + Tokenizer.count(content)
          if (this.tokens > this.maxAnswerTokens) {
            return new AiModel.MalformedResponse({
              model: this.model,
              reason: `the answer ran past ${this.maxAnswerTokens} tokens (${this.overrun} × the ${this.maxTokens} maxTokens it asked ` +
                `for, + 64; maxTokensOverrun): the server does not stop at max_tokens`
            })
          }
        }
        out.push(new AiModel.CompletionChunk({ delta: content }, true))
      }
    }
    const finishReason = finishReasonOf(choice["finish_reason"])
    if (finishReason !== undefined) this.finishReason = finishReason
    return undefined
  }

  private malformed(reason: string): AiModel.MalformedResponse {
    return new AiModel.MalformedResponse({ model: this.model, reason: HttpErrors.scrub(reason, this.secrets) })
  }

  /** An error the provider sent inside the stream: typed when it says what it is, else the stream is incomplete. */
  private failed(body: HttpErrors.ErrorBody): AiModel.ModelError {
    return HttpErrors.fromErrorEvent(this.model, body, undefined) ??
      new AiModel.IncompleteStream({
        model: this.model,
        partial: this.text,
        reason: `the provider sent an error event: ${
          body.message === "" ? "no message" : quote(body.message, this.secrets, HttpErrors.defaults.maxReasonLength)
        }${
          body.code === undefined && body.type === undefined ? "" : ` (${body.code ?? body.type})`
        }`
      })
  }
}
