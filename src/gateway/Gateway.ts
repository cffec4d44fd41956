/**
 * An OpenAI-compatible gateway in front of `AgentService`: any client, in any language, gets
 * the whole stack — retries, breaker, token budget, adaptive concurrency, hedging, fallback
 * tiers, coalescing and the memo — by pointing its base URL here. Routes, as an
 * `@effect/platform` `HttpApp` an Effect app mounts on its own server (or {@link layer} serves):
 *
 * - `POST /v1/chat/completions`: a whole answer (`agent.complete`), or with `stream: true` the
 *   answer as Server-Sent Events in OpenAI's `chat.completion.chunk` shape (`agent.stream`).
 * - `GET /v1/models`, `GET /healthz`, `GET /metrics` (Prometheus text of every Effect metric).
 *
 * What the gateways users complain of do wrong (LiteLLM, Portkey: research/past-one-process.md
 * §3), and what this one does instead:
 * - **Honest streams.** The response head waits for the first chunk: a failure before it is
 *   retried or falls back inside `AgentService`, and only when every tier failed does the
 *   client get an HTTP error (429, 502, 503, 504) — never a 200 with an empty answer. After the
 *   first chunk a break is continued by the agent (`stream.continue`) or ends the stream with
 *   an SSE `error` event in OpenAI's shape and no `[DONE]`; a `finish_reason` is only ever
 *   the model's own, and each chunk's `model` the tier that answered it (as a whole answer's).
 * - **Honest back-pressure.** When more calls wait for a permit or a token budget than
 *   `maxQueued`, or the upstream budget could not take the request for longer than
 *   `maxBudgetWait`, the client gets a 429 at once with a `retry-after` computed from the
 *   budget's level and refill rate; a provider's own `retry-after` on a 429 it could not get
 *   round is passed on. A client's own key has its own budget ({@link ClientKeys}) and every
 *   answer carries its `x-ratelimit-*` headers.
 * - **Cancellation.** A client that disconnects interrupts its request's fiber, and with it
 *   the upstream call (a coalesced call goes on while others share it).
 * - **Secrets.** The upstream key is never in a response: every error text the gateway sends
 *   is scrubbed of `secrets` (on top of the model's own scrubbing), and the metrics carry
 *   model and client names only.
 * - **Limits.** A request body above `maxBodyBytes` is refused with 413 before it is read
 *   whole; `max_tokens` is capped at `maxTokensCap`; a stream longer than `maxStreamChars` ends
 *   with an SSE error (and its upstream call is interrupted). No CORS headers unless `cors`
 *   names the origins allowed.
 *
 * One structured log line per request (`Effect.logInfo` with annotations: route, status,
 * client, model, tokens, duration, error), without the prompt unless `logPrompts`.
 *
 * Cost (`npm run bench -- gateway`, 2 cores, Node 20): 1.1 to 1.4 ms of CPU a whole request
 * and 7 to 8 ms a streamed answer of 20 chunks, where the least proxy on the same
 * `@effect/platform` server and `HttpClient` takes 0.9 and 4.2 to 4.8 ms, and on `node:http`
 * alone 0.35 and 1.8 to 2 ms. Past a few hundred requests a second per core, run replicas
 * with a shared store rather than one process.
 *
 * @example
 * ```ts
 * import { NodeHttpServer } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import { createServer } from "node:http"
 * import { AgentService, EmbeddedModel } from "wiz-effect"
 * import * as Gateway from "wiz-effect/gateway/Gateway"
 *
 * const main = Gateway.layer({ models: ["embedded"] }).pipe(
 *   Layer.provide(NodeHttpServer.layer(createServer, { port: 8787, host: "127.0.0.1" })),
 *   Layer.provide(AgentService.layer({ concurrency: 64 })),
 *   Layer.provide(EmbeddedModel.layer({ seed: 1 }))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Cause, Chunk, Clock, Duration, Effect, Either, Exit, Layer, Metric, MetricBoundaries, MetricKey, Option, Redacted, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { Readable } from "node:stream"
import * as AgentService from "../agent/AgentService.js"
import { requestOf } from "../agent/AgentTask.js"
import type * as AgentTask from "../agent/AgentTask.js"
import type * as BatchStop from "../agent/BatchStop.js"
import type * as FallbackChain from "../agent/FallbackChain.js"
import type * as AiModel from "../model/AiModel.js"
import * as HttpErrors from "../model/HttpErrors.js"
import * as TokenBudget from "../policy/TokenBudget.js"
import * as ClientKeys from "./ClientKeys.js"
import * as OpenAiWire from "./OpenAiWire.js"
import * as Prometheus from "./Prometheus.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The models `GET /v1/models` lists and a request may name; absent: every name is taken, `wiz` listed. */
  readonly models?: ReadonlyArray<string>
  /** The clients and their limits; absent: no key asked for (bind to loopback only). */
  readonly clientKeys?: ReadonlyArray<ClientKeys.ClientKey>
  /** Secrets (the upstream keys) scrubbed from every text the gateway sends. */
  readonly secrets?: ReadonlyArray<Redacted.Redacted<string>>
  /** Largest request body read, in bytes (default 1 MiB); above it, 413. */
  readonly maxBodyBytes?: number
  /** `max_tokens` of a request that gives none (default `AgentService`'s, 256 unless set there). */
  readonly maxTokens?: number
  /** Largest `max_tokens` a request may ask for; above it, the cap (default 16,384). */
  readonly maxTokensCap?: number
  /** Longest streamed answer, in characters (default 1,000,000); past it the stream ends with an SSE error. */
  readonly maxStreamChars?: number
  /** Calls waiting for a permit or a token budget beyond which a new request gets 429 (default 512). */
  readonly maxQueued?: number
  /** Longest wait for the upstream token budget a request is queued for (default 10 s); longer, 429. */
  readonly maxBudgetWait?: Duration.DurationInput
  /** Origins allowed to call from a browser; absent: no CORS headers at all. */
  readonly cors?: ReadonlyArray<string>
  /** Put the prompt in each request's log line (default false). */
  readonly logPrompts?: boolean
}

/**
 * 1 MiB bodies, `max_tokens` capped at 16,384, streams of at most 1,000,000 characters, 429
 * beyond 512 calls waiting or a 10 s budget wait, no CORS, no prompt in the logs.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxBodyBytes: 1024 * 1024,
  maxTokensCap: 16_384,
  maxStreamChars: 1_000_000,
  maxQueued: 512,
  maxBudgetWait: Duration.seconds(10)
} as const

const requestsKey = MetricKey.counter("wiz_gateway_requests_total", { description: "gateway requests answered", incremental: true })

/**
 * The gateway's own metrics, next to the agent's in `GET /metrics`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  requests: Metric.fromMetricKey(requestsKey),
  openStreams: Metric.gauge("wiz_gateway_open_streams", { description: "streamed answers in flight" }),
  duration: Metric.histogram(
    "wiz_gateway_request_duration_ms",
    MetricBoundaries.exponential({ start: 1, factor: 2, count: 18 }),
    "time to the whole answer (a stream: to its end), in milliseconds"
  )
} as const

/** An error as the client sees it: status, OpenAI error type and code, and when to come back. */
interface Refusal {
  readonly status: number
  readonly type: string
  readonly code: string | null
  readonly message: string
  readonly retryAfter?: Duration.Duration | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
}

type Ended = FallbackChain.AnswerError | BatchStop.BatchStopped | AgentService.StreamError

/** The error that decided the outcome: the last tier's when every tier failed. */
const rootOf = (error: Ended): Exclude<Ended, { readonly _tag: "AllTiersFailed" }> => {
  if (error._tag !== "AllTiersFailed") return error
  const last = error.failures[error.failures.length - 1]!.error
  return rootOf(last)
}

/** How an error that ended a request reaches its client. */
const refusalOf = (error: Ended | undefined): Omit<Refusal, "message"> & { readonly detail: string } => {
  if (error === undefined) return { status: 500, type: "server_error", code: null, detail: "the gateway failed" }
  const root = rootOf(error)
  const detail = `${root._tag}: ${root.message}`
  const retryAfter = "retryAfter" in root ? root.retryAfter : undefined
  switch (root._tag) {
    case "RateLimited":
      return { status: 429, type: "rate_limit_exceeded", code: "upstream_rate_limited", detail, retryAfter }
    case "QuotaExhausted":
      return { status: 429, type: "insufficient_quota", code: "insufficient_quota", detail }
    case "Overloaded":
    case "CircuitOpen":
      return { status: 503, type: "server_error", code: root._tag === "Overloaded" ? "upstream_overloaded" : "circuit_open", detail, retryAfter }
    case "ModelTimeout":
    case "DeadlineExceeded":
      return { status: 504, type: "server_error", code: "upstream_timeout", detail }
    case "InvalidRequest":
      return {
        status: 400,
        type: "invalid_request_error",
        code: root.contextLengthExceeded === true ? "context_length_exceeded" : "invalid_request",
        detail
      }
    case "BudgetExceeded":
      return { status: 400, type: "invalid_request_error", code: "request_too_large", detail }
    case "AuthenticationFailed":
      return { status: 502, type: "server_error", code: "upstream_authentication_failed", detail }
    case "ProviderError":
      return { status: 502, type: "server_error", code: "upstream_error", detail, retryAfter }
    default:
      return { status: 502, type: "server_error", code: "upstream_error", detail }
  }
}

const retryAfterHeader = (retryAfter: Duration.Duration | undefined): Record<string, string> =>
  retryAfter === undefined || !Duration.isFinite(retryAfter)
    ? {}
    : { "retry-after": String(Math.max(1, Math.ceil(Duration.toSeconds(retryAfter)))) }

const json = (status: number, body: unknown, headers: Readonly<Record<string, string>> = {}) =>
  HttpServerResponse.unsafeJson(body, { status, headers })

const encoder = new TextEncoder()

/**
 * A request's body as text, failing past `maxBytes`. On Node it is read from the
 * `IncomingMessage` with one `Effect.async`: the platform's `request.text` builds a cached
 * effect (a semaphore, a deferred, a fiber run to make it) and a resource around the read,
 * ~0.15 ms of CPU a request. Like the platform's, the stream is destroyed once read or on a
 * failure or interruption, unless it is already closed.
 */
const bodyText = (request: HttpServerRequest.HttpServerRequest, maxBytes: number): Effect.Effect<string, unknown> => {
  const source = request.source
  if (!(source instanceof Readable)) return HttpIncomingMessage.withMaxBodySize(request.text, Option.some(maxBytes))
  return Effect.async<string, Error>((resume) => {
    const parts: Array<Buffer> = []
    let bytes = 0
    const finish = (outcome: Effect.Effect<string, Error>) => {
      source.off("data", onData).off("end", onEnd).off("error", onError)
      if (!source.closed) source.destroy()
      resume(outcome)
    }
    const onData = (chunk: Buffer) => {
      bytes += chunk.length
      if (bytes > maxBytes) finish(Effect.fail(new Error("maxBytes exceeded")))
      else parts.push(chunk)
    }
    const onEnd = () => finish(Effect.sync(() => Buffer.concat(parts, bytes).toString("utf8")))
    const onError = (error: Error) => finish(Effect.fail(error))
    source.on("data", onData).once("end", onEnd).once("error", onError)
    return Effect.sync(() => {
      source.off("data", onData).off("end", onEnd).off("error", onError)
      if (!source.closed) source.destroy()
    })
  })
}

/** The log line's fields as a request goes. */
interface Line {
  route: string
  status: number
  stream: boolean
  client?: string
  model?: string
  promptTokens?: number
  completionTokens?: number
  finishReason?: string
  error?: string
  prompt?: string
}

/**
 * The gateway's routes as an `HttpApp` on the `AgentService` in context: mount it on a server
 * (`HttpServer.serve`) or in a larger router.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<HttpApp.Default, never, AgentService.AgentService> =>
  Effect.gen(function*() {
    const agent = yield* AgentService.AgentService
    const clients = options.clientKeys === undefined ? undefined : yield* ClientKeys.make(options.clientKeys)
    const secrets = (options.secrets ?? []).map((secret) => Redacted.value(secret))
    const scrub = (text: string) => HttpErrors.scrub(text, secrets)
    const maxBodyBytes = options.maxBodyBytes ?? defaults.maxBodyBytes
    const maxTokens = options.maxTokens ?? AgentService.defaults.maxTokens
    const maxTokensCap = options.maxTokensCap ?? defaults.maxTokensCap
    const maxStreamChars = options.maxStreamChars ?? defaults.maxStreamChars
    const maxQueued = options.maxQueued ?? defaults.maxQueued
    const maxBudgetWaitSeconds = Duration.toSeconds(options.maxBudgetWait ?? defaults.maxBudgetWait)
    const models = options.models
    const listed = models ?? ["wiz"]

    const refuse = (refusal: Refusal) =>
      json(refusal.status, OpenAiWire.errorJson(scrub(refusal.message), refusal.type, refusal.code), {
        ...refusal.headers,
        ...retryAfterHeader(refusal.retryAfter)
      })

    // one counter per route and status, each a metric of its own tagged key: `Metric.tagged`
    // merges its tags into a new array on every update, which misses the metric's hook cache (a
    // key built and hashed, and a registry lookup, per request)
    const counters = new Map<string, Metric.Metric.Counter<number>>()
    const counterOf = (route: string, status: number) => {
      const key = `${route} ${status}`
      let counter = counters.get(key)
      if (counter === undefined) {
        counter = Metric.fromMetricKey(requestsKey.pipe(MetricKey.tagged("route", route), MetricKey.tagged("status", String(status))))
        counters.set(key, counter)
      }
      return counter
    }

    /** Ends a request: its metrics and its one log line. */
    const done = (line: Line, start: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const durationMs = now - start
        return Effect.zipRight(
          Effect.zipRight(Metric.update(metrics.duration, durationMs), Metric.increment(counterOf(line.route, line.status))),
          Effect.annotateLogs(Effect.logInfo("gateway request"), { ...line, durationMs })
        )
      })

    /** The client a request comes from, or the refusal of one that is not known. */
    const authenticate = (request: HttpServerRequest.HttpServerRequest): Either.Either<ClientKeys.Client | undefined, Refusal> => {
      if (clients === undefined) return Either.right(undefined)
      const client = clients.authenticate(request.headers["authorization"])
      return client === undefined
        ? Either.left({ status: 401, type: "invalid_request_error", code: "invalid_api_key", message: "Incorrect or missing API key." })
        : Either.right(client)
    }

    /**
     * When the agent would make this request wait too long, the time until it would not: more
     * calls waiting than `maxQueued`, or an upstream token budget (the one that frees soonest)
     * that would hold it longer than `maxBudgetWait`. A budget serves its callers in turn, so
     * the ones already waiting go first: each is counted at this request's cost (a budget says
     * how many wait, not what each will take).
     */
    const pressure = (flow: AgentService.FlowState, cost: TokenBudget.Cost): Duration.Duration | undefined => {
      let waiting = flow.queued
      let soonest: number | undefined
      for (const budget of Object.values(flow.budgets)) {
        waiting += budget.waiting
        let wait = 0
        for (const dimension of ["requests", "tokens", "inputTokens", "outputTokens"] as const) {
          const at = budget.dimensions[dimension]
          if (at === undefined) continue
          const needed = (cost[dimension] ?? 0) * (1 + budget.waiting)
          if (needed > at.available) wait = Math.max(wait, (needed - at.available) / at.perSecond)
          // a provider's 429 holds the dimension until its retry-after, the longest one it gave
          if (at.heldMillis !== undefined) wait = Math.max(wait, at.heldMillis / 1000)
        }
        if (Object.keys(budget.dimensions).length > 0) soonest = soonest === undefined ? wait : Math.min(soonest, wait)
      }
      const wait = soonest ?? 0
      if (waiting >= maxQueued) return Duration.seconds(Math.max(1, Math.ceil(wait)))
      return wait > maxBudgetWaitSeconds ? Duration.seconds(Math.ceil(wait)) : undefined
    }

    const chat = Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      const request = yield* HttpServerRequest.HttpServerRequest
      const line: Line = { route: "chat", status: 200, stream: false }
      const refused = (refusal: Refusal) => {
        line.status = refusal.status
        line.error = refusal.code ?? refusal.type
        return Effect.as(done(line, start), refuse(refusal))
      }
      const authenticated = authenticate(request)
      if (Either.isLeft(authenticated)) return yield* refused(authenticated.left)
      const client = authenticated.right
      if (client !== undefined) line.client = client.name
      const declared = Number(request.headers["content-length"])
      const tooLarge: Refusal = {
        status: 413,
        type: "invalid_request_error",
        code: "request_too_large",
        message: `The request body is larger than ${maxBodyBytes} bytes.`
      }
      if (declared > maxBodyBytes) return yield* refused(tooLarge)
      const text = yield* Effect.either(bodyText(request, maxBodyBytes))
      if (Either.isLeft(text)) return yield* refused(tooLarge)
      let body: unknown
      try {
        body = JSON.parse(text.right)
      } catch {
        return yield* refused({ status: 400, type: "invalid_request_error", code: null, message: "The body is not JSON." })
      }
      const decoded = OpenAiWire.decodeRequest(body)
      const invalid = Either.isLeft(decoded) ? decoded.left : OpenAiWire.refusal(decoded.right)
      if (invalid !== undefined || Either.isLeft(decoded)) {
        return yield* refused({ status: 400, type: "invalid_request_error", code: null, message: invalid ?? "invalid request" })
      }
      const chatRequest = decoded.right
      line.model = chatRequest.model
      line.stream = chatRequest.stream === true
      if (models !== undefined && !models.includes(chatRequest.model)) {
        return yield* refused({
          status: 404,
          type: "invalid_request_error",
          code: "model_not_found",
          message: `The model ${JSON.stringify(chatRequest.model)} is not served here; GET /v1/models lists those that are.`
        })
      }
      const id = `chatcmpl-${randomUUID()}`
      const task = OpenAiWire.toTask(chatRequest, id, { maxTokens, maxTokensCap })
      if (options.logPrompts === true) line.prompt = task.prompt
      const cost = TokenBudget.requestCost(requestOf(task, maxTokens))
      const busy = pressure(yield* agent.flow, cost)
      const clientHeaders = client === undefined ? {} : yield* client.headers
      if (busy !== undefined) {
        return yield* refused({
          status: 429,
          type: "rate_limit_exceeded",
          code: "gateway_busy",
          message: `The upstream is at its limit; retry after ${Duration.format(busy)}.`,
          retryAfter: busy,
          headers: clientHeaders
        })
      }
      const admitted = client === undefined ? Either.right(undefined) : yield* Effect.either(client.admit(cost))
      if (Either.isLeft(admitted)) {
        const limited = admitted.left
        return yield* refused({
          status: 429,
          type: "rate_limit_exceeded",
          code: `client_${limited.limit}_per_minute`,
          message: limited.message,
          retryAfter: limited.retryAfter,
          headers: limited.headers
        })
      }
      const reservation = admitted.right
      const settle = (usage: AiModel.Usage | undefined) =>
        reservation === undefined
          ? Effect.void
          : usage === undefined
          ? reservation.settle({ requests: 1, tokens: 0 })
          : reservation.settle(TokenBudget.usageCost(usage))
      const headers = client === undefined ? {} : yield* client.headers
      const created = Math.floor(start / 1000)
      return yield* (line.stream
        ? streamed(task, chatRequest, { id, created, headers, line, start, settle, refused })
        : whole(task, { id, created, headers, line, start, settle, refused }))
    })

    interface Context {
      readonly id: string
      readonly created: number
      readonly headers: Readonly<Record<string, string>>
      readonly line: Line
      readonly start: number
      readonly settle: (usage: AiModel.Usage | undefined) => Effect.Effect<void>
      readonly refused: (refusal: Refusal) => Effect.Effect<HttpServerResponse.HttpServerResponse>
    }

    const refusalFor = (error: Ended | undefined, headers: Readonly<Record<string, string>>): Refusal => {
      const { detail, ...refusal } = refusalOf(error)
      return { ...refusal, message: detail, headers }
    }

    const whole = (task: AgentTask.AgentTask, context: Context) =>
      Effect.gen(function*() {
        const { headers, line } = context
        const outcome = yield* Effect.either(agent.complete(task)).pipe(
          Effect.onInterrupt(() => {
            line.status = 499
            line.error = "client_closed"
            return Effect.zipRight(context.settle(undefined), done(line, context.start))
          })
        )
        if (Either.isLeft(outcome)) {
          yield* context.settle(undefined)
          return yield* context.refused(refusalFor(outcome.left.error, headers))
        }
        const { completion } = outcome.right
        yield* context.settle(completion.usage)
        line.promptTokens = completion.usage.promptTokens
        line.completionTokens = completion.usage.completionTokens
        line.finishReason = completion.finishReason
        yield* done(line, context.start)
        return json(200, OpenAiWire.completionJson(context.id, context.created, completion), headers)
      })

    const streamed = (task: AgentTask.AgentTask, request: OpenAiWire.ChatRequest, context: Context) =>
      Effect.gen(function*() {
        const { created, headers, id, line } = context
        const includeUsage = request.stream_options?.include_usage === true
        // Each chunk names the model that answers it, as a whole answer does: the tier the agent
        // started (or continued) the answer on, told before its first chunk.
        let model = request.model
        const answering = (name: string) =>
          Effect.sync(() => {
            model = name
          })
        // The head waits for the first chunk: until then a failure is an HTTP error, after the
        // agent's retries and fallback tiers, never a 200 with an empty answer.
        const scope = yield* Scope.make()
        const pull = yield* Scope.extend(agent.pull(task, { onAnswering: answering }), scope)
        const first = yield* Effect.either(Effect.repeat(pull, { until: (chunk) => Chunk.isNonEmpty(chunk) })).pipe(
          Effect.onInterrupt(() => {
            line.status = 499
            line.error = "client_closed"
            return Effect.zipRight(Effect.zipRight(Scope.close(scope, Exit.void), context.settle(undefined)), done(line, context.start))
          })
        )
        if (Either.isLeft(first)) {
          yield* Scope.close(scope, Exit.void)
          yield* context.settle(undefined)
          if (Option.isNone(first.left)) {
            return yield* context.refused({ status: 502, type: "server_error", code: "upstream_error", message: "The upstream sent no answer.", headers })
          }
          return yield* context.refused(refusalFor(first.left.value, headers))
        }
        let chars = 0
        let started = false
        let usage: AiModel.Usage | undefined
        /** The SSE events of one pull of the agent's stream, as one piece of the body: one write. */
        const encode = (chunks: Chunk.Chunk<AiModel.CompletionChunk>): string => {
          let out = ""
          for (const chunk of chunks) {
            if (chunk.delta !== "" || !started) {
              out += OpenAiWire.sse(
                OpenAiWire.chunkJson(id, created, model, started ? { content: chunk.delta } : { role: "assistant", content: chunk.delta }, null)
              )
              started = true
              chars += chunk.delta.length
            }
            if (chunk.finishReason !== undefined) {
              usage = chunk.usage
              line.finishReason = chunk.finishReason
              out += OpenAiWire.sse(OpenAiWire.chunkJson(id, created, model, {}, chunk.finishReason))
              if (includeUsage && chunk.usage !== undefined) out += OpenAiWire.sse(OpenAiWire.usageChunkJson(id, created, model, chunk.usage))
              out += OpenAiWire.sse("[DONE]")
            }
          }
          return out
        }
        const failed = (code: string, message: string, type = "server_error") => {
          line.error = code
          return OpenAiWire.sse(OpenAiWire.errorJson(scrub(message), type, code))
        }
        // The body is one stage over the agent's pull, not a stage per step (prepend the first
        // chunk, encode, cut at the limit, turn an error into its event, to bytes): each stage
        // of a Stream costs its own channel step per chunk, and a stream's chunks are many.
        let pending: Chunk.Chunk<AiModel.CompletionChunk> | undefined = first.right
        let over = false
        const piece = (text: string): Chunk.Chunk<Uint8Array> => text === "" ? Chunk.empty() : Chunk.of(encoder.encode(text))
        const answered = (chunks: Chunk.Chunk<AiModel.CompletionChunk>): Chunk.Chunk<Uint8Array> => {
          const text = encode(chunks)
          if (chars <= maxStreamChars) return piece(text)
          over = true
          return piece(text + failed("stream_too_long", `The answer passed the gateway's limit of ${maxStreamChars} characters.`, "invalid_request_error"))
        }
        const next: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<never>> = Effect.suspend(() => {
          if (over) return Effect.fail(Option.none())
          if (pending !== undefined) {
            const chunks = pending
            pending = undefined
            return Effect.succeed(answered(chunks))
          }
          return Effect.matchEffect(pull, {
            onSuccess: (chunks) => Effect.succeed(answered(chunks)),
            onFailure: (error) => {
              over = true
              if (Option.isNone(error)) return Effect.fail(Option.none())
              const refusal = refusalOf(error.value)
              const code = error.value._tag === "IncompleteStream" ? "incomplete_stream" : refusal.code ?? "upstream_error"
              return Effect.succeed(piece(failed(code, refusal.detail)))
            }
          })
        })
        const body = Stream.repeatEffectChunkOption(next).pipe(
          Stream.ensuringWith((exit) =>
            Effect.suspend(() => {
              if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) {
                line.status = 499
                line.error = "client_closed"
              }
              if (usage !== undefined) {
                line.promptTokens = usage.promptTokens
                line.completionTokens = usage.completionTokens
              }
              return Effect.zipRight(
                Effect.zipRight(Scope.close(scope, Exit.void), context.settle(usage)),
                Effect.zipRight(Metric.incrementBy(metrics.openStreams, -1), done(line, context.start))
              )
            })
          )
        )
        yield* Metric.increment(metrics.openStreams)
        return HttpServerResponse.stream(body, {
          contentType: "text/event-stream",
          headers: { "cache-control": "no-cache", "x-accel-buffering": "no", ...headers }
        })
      })

    const listModels = Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      const request = yield* HttpServerRequest.HttpServerRequest
      const line: Line = { route: "models", status: 200, stream: false }
      const authenticated = authenticate(request)
      if (Either.isLeft(authenticated)) {
        line.status = 401
        yield* done(line, start)
        return refuse(authenticated.left)
      }
      yield* done(line, start)
      return json(200, { object: "list", data: listed.map((id) => ({ id, object: "model", created: 0, owned_by: "wiz" })) })
    })

    const router = HttpRouter.empty.pipe(
      HttpRouter.post("/v1/chat/completions", chat),
      HttpRouter.get("/v1/models", listModels),
      HttpRouter.get("/healthz", Effect.succeed(json(200, { status: "ok" }))),
      HttpRouter.get("/metrics", Effect.map(Prometheus.render, (text) => HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4" })))
    )
    const app = Effect.catchTag(
      yield* HttpRouter.toHttpApp(router),
      "RouteNotFound",
      () => Effect.succeed(json(404, OpenAiWire.errorJson("Not found.", "invalid_request_error", "not_found")))
    )
    return options.cors === undefined
      ? app
      : HttpMiddleware.cors({ allowedOrigins: options.cors, allowedHeaders: ["authorization", "content-type"] })(app)
  })

/**
 * The gateway served on the `HttpServer` in context (`NodeHttpServer.layer`, ...).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, never, AgentService.AgentService | HttpServer.HttpServer> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const app = yield* make(options)
    const served = HttpServer.serve(app)
    // The server's span per request (its URL parsed, every header an attribute) only when a
    // tracer records spans: under Effect's default one it is ~0.1 ms of a request for nothing.
    return (yield* Effect.tracer) === nativeTracer ? HttpMiddleware.withTracerDisabledWhen(served, () => true) : served
  }))

/** Effect's default tracer, which records no span. */
const nativeTracer = Effect.runSync(Effect.tracer)
