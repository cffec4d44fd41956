/**
 * An adapter between `@effect/ai`'s `LanguageModel` and wiz-effect's {@link AiModel.AiModel}, so
 * every `@effect/ai` provider (OpenAI, Anthropic, Google, Amazon Bedrock, OpenRouter, ...) gets
 * the whole resilience stack: retries that know a 400 from a 429, a breaker per model, hedging,
 * fallback tiers, budgets.
 *
 * - {@link fromLanguageModel} / {@link layer}: a `LanguageModel` as an `AiModel`. Its
 *   `AiError`s become typed {@link AiModel.ModelError}s: an HTTP error response goes through
 *   {@link HttpErrors.fromResponse} (so a 429 is `RateLimited` with its `Retry-After` and the
 *   rate limits its headers report, a 503 `Overloaded`, a context-length 400 `InvalidRequest`),
 *   a transport failure is `Unavailable`, an answer that does not decode is `MalformedResponse`.
 * - Rate limits: `AgentService`'s default token budget learns the provider's limits from its
 *   reports. A 429 carries one (its headers reach us in the `HttpResponseError`), but
 *   `@effect/ai` gives a successful answer without its headers: give the provider's client
 *   {@link withResponseHeaders} (`OpenAiClient.layer({ transformClient:
 *   EffectAi.withResponseHeaders })`) and each answer carries its report, or give the budget
 *   your limits (`tokenBudget: { limits: { requests: 500, tokens: 200_000 } }`). Without
 *   either, the budget learns only from 429s.
 * - {@link toLanguageModel} / {@link languageModelLayer}: the other way, an `AiModel` (the
 *   embedded simulator, the OpenAI-compatible client) as a text-only `LanguageModel` for code
 *   written against `@effect/ai`. A chat's turns go as messages (`CompletionRequest.messages`).
 *   Tools, structured output, images and files need a real provider; asking for them fails
 *   with `MalformedInput`. Errors come as the `AiError` an `@effect/ai` provider gives for the
 *   same response (a 429 is an `HttpResponseError` with status 429 and its `retry-after`, a
 *   connection failure an `HttpRequestError`), the `ModelError` as its `cause`, so going back
 *   with `fromLanguageModel` returns it unchanged.
 *
 * `@effect/ai`'s `LanguageModel` takes no `maxTokens` or `temperature` (they are each
 * provider's own config): pass `configure` to apply them per request, e.g. with
 * `OpenAiLanguageModel.withConfigOverride`.
 *
 * `@effect/ai` is an optional peer dependency (its Effect 3 line, 0.37): this module is not
 * re-exported from the package index, so an app without `@effect/ai` never loads it. Import it
 * as `wiz-effect/model/EffectAi`.
 *
 * @example
 * ```ts
 * import { LanguageModel } from "@effect/ai"
 * import { OpenAiClient, OpenAiLanguageModel } from "@effect/ai-openai"
 * import { Layer } from "effect"
 * import { AgentService } from "wiz-effect"
 * import * as EffectAi from "wiz-effect/model/EffectAi"
 *
 * const Model = EffectAi.layer({
 *   name: "gpt-4o-mini",
 *   configure: (request) => OpenAiLanguageModel.withConfigOverride({ max_output_tokens: request.maxTokens })
 * }).pipe(Layer.provide(OpenAiLanguageModel.layer({ model: "gpt-4o-mini" })))
 *
 * const Agent = AgentService.layer({ concurrency: 8 }).pipe(Layer.provide(Model))
 * ```
 *
 * @since 0.1.0
 */
import * as AiError from "@effect/ai/AiError"
import * as LanguageModel from "@effect/ai/LanguageModel"
import type * as Prompt from "@effect/ai/Prompt"
import type * as Response from "@effect/ai/Response"
import * as HttpClient from "@effect/platform/HttpClient"
import { Clock, Duration, Effect, Either, FiberRef, Layer, Option, Stream } from "effect"
import * as AiModel from "./AiModel.js"
import * as HttpErrors from "./HttpErrors.js"
import * as RateLimitHeaders from "./RateLimitHeaders.js"
import * as Tokenizer from "./Tokenizer.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The model's name in errors, completions and breaker keys. */
  readonly name: string
  /**
   * Applies a request's `maxTokens` and `temperature` to the call, in the provider's own terms
   * (`OpenAiLanguageModel.withConfigOverride({ max_output_tokens: request.maxTokens })`).
   * Without it the provider's configured defaults apply.
   */
  readonly configure?: (
    request: AiModel.CompletionRequest
  ) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/**
 * The `LanguageModel` as an `AiModel`. A completion without usage from the provider gets an
 * estimate from {@link Tokenizer.count}; a stream that ends without its finish part fails with
 * `IncompleteStream`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromLanguageModel = (model: LanguageModel.Service, options: Options): AiModel.AiModel.Service => {
  const { name } = options
  const configure = options.configure ?? (() => (effect) => effect)
  const mapError = (error: AiError.AiError) => Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.fail(fromAiError(name, error, now)))

  const generate = (request: AiModel.CompletionRequest): Effect.Effect<AiModel.Completion, AiModel.ModelError> =>
    model.generateText({ prompt: toPrompt(request) }).pipe(
      configure(request),
      Effect.catchAll(mapError),
      Effect.flatMap((response) =>
        Effect.map(reported, (rateLimits) => {
          const text = response.text
          return new AiModel.Completion({
            text,
            finishReason: toFinishReason(response.finishReason),
            usage: toUsage(response.usage, request, text),
            model: name,
            ...(rateLimits === undefined ? {} : { rateLimits })
          }, true)
        })),
      Effect.locally(responseHeaders, undefined)
    )

  const stream = (request: AiModel.CompletionRequest): Stream.Stream<AiModel.CompletionChunk, AiModel.ModelError> =>
    Stream.suspend(() => {
      let text = ""
      let finished = false
      // `configure` works on an Effect: run it around the stream's start, and give the stream the
      // context it saw there (a provider's config override is a service in that context).
      const started = Stream.unwrap(
        configure(request)(
          Effect.map(Effect.context<never>(), (context) => Stream.provideContext(model.streamText({ prompt: toPrompt(request) }), context))
        )
      )
      const parts = started.pipe(
        Stream.catchAll((error) => Stream.fromEffect(mapError(error))),
        Stream.mapConcatEffect((part): Effect.Effect<ReadonlyArray<AiModel.CompletionChunk>, AiModel.ModelError> => {
          switch (part.type) {
            case "text-delta":
              if (part.delta === "") return Effect.succeed([])
              text += part.delta
              return Effect.succeed([new AiModel.CompletionChunk({ delta: part.delta }, true)])
            case "finish":
              finished = true
              return Effect.map(reported, (rateLimits) => [
                new AiModel.CompletionChunk({
                  delta: "",
                  finishReason: toFinishReason(part.reason),
                  usage: toUsage(part.usage, request, text),
                  ...(rateLimits === undefined ? {} : { rateLimits })
                }, true)
              ])
            case "error":
              return Effect.fail(
                new AiModel.IncompleteStream({ model: name, partial: text, reason: `the provider sent an error: ${describe(part.error)}` })
              )
            default:
              return Effect.succeed([])
          }
        })
      )
      const end = Stream.suspend(() =>
        finished
          ? Stream.empty
          : Stream.fail(new AiModel.IncompleteStream({ model: name, partial: text, reason: "the stream ended without its finish part" }))
      )
      // the headers of this stream's response, not of an earlier call on the same fiber
      return Stream.concat(Stream.concat(Stream.execute(FiberRef.set(responseHeaders, undefined)), parts), end)
    })

  return { name, generate, stream }
}

/**
 * The `LanguageModel` in context as an `AiModel`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<AiModel.AiModel.Service, never, LanguageModel.LanguageModel> =>
  Effect.map(LanguageModel.LanguageModel, (model) => fromLanguageModel(model, options))

/**
 * The `LanguageModel` in context as the {@link AiModel.AiModel} service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<AiModel.AiModel, never, LanguageModel.LanguageModel> =>
  Layer.effect(AiModel.AiModel, make(options))

/**
 * A `transformClient` for an `@effect/ai` provider's HTTP client: it keeps each response's
 * headers on the calling fiber, so {@link fromLanguageModel} reads the provider's rate-limit
 * report from them (`x-ratelimit-*`, `anthropic-ratelimit-*`, `ratelimit-*`) and each
 * completion carries it, which is what a learning token budget learns from.
 *
 * @example
 * ```ts
 * import { OpenAiClient } from "@effect/ai-openai"
 * import { Redacted } from "effect"
 * import * as EffectAi from "wiz-effect/model/EffectAi"
 *
 * const Client = OpenAiClient.layer({
 *   apiKey: Redacted.make(process.env.OPENAI_API_KEY ?? ""),
 *   transformClient: EffectAi.withResponseHeaders
 * })
 * ```
 *
 * @since 0.1.0
 * @category rate limits
 */
export const withResponseHeaders = <E, R>(client: HttpClient.HttpClient.With<E, R>): HttpClient.HttpClient.With<E, R> =>
  HttpClient.tap(client, (response) => FiberRef.set(responseHeaders, response.headers))

/**
 * Options of {@link toLanguageModel}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ToLanguageModelOptions {
  /** The `maxTokens` of each request (a `LanguageModel` call does not say). */
  readonly maxTokens?: number
}

/**
 * `maxTokens: 1024`.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxTokens: 1024
} as const

/**
 * An `AiModel` as a text-only `@effect/ai` `LanguageModel`. The prompt's system messages
 * become the request's `system`; a single user message is the prompt; a longer conversation
 * goes turn by turn in `messages` (and written out in `prompt`, `User: ...`, `Assistant: ...`,
 * for a model without turns). A reasoning part of an earlier answer is left out; an image or
 * file part, a tool call or result, a tool, or a structured output fails with `MalformedInput`
 * naming it: this adapter answers with text only.
 *
 * @since 0.1.0
 * @category constructors
 */
export const toLanguageModel = (
  model: AiModel.AiModel.Service,
  options: ToLanguageModelOptions = {}
): Effect.Effect<LanguageModel.Service> => {
  const maxTokens = options.maxTokens ?? defaults.maxTokens
  const request = (
    provider: LanguageModel.ProviderOptions,
    method: string
  ): Effect.Effect<AiModel.CompletionRequest, AiError.AiError> => {
    const refuse = (description: string) => Effect.fail(new AiError.MalformedInput({ module: "EffectAi", method, description }))
    if (provider.tools.length > 0 || provider.responseFormat.type !== "text") {
      return refuse(`${model.name} answers with text only: no tools, no structured output`)
    }
    return Either.match(fromPrompt(provider.prompt), {
      onLeft: (what) => refuse(`${model.name} takes text only: ${what} cannot be sent`),
      onRight: ({ messages, prompt, system }) =>
        prompt.trim() === ""
          ? refuse("the prompt has no text")
          : Effect.succeed(new AiModel.CompletionRequest({
            prompt,
            maxTokens,
            ...(system === undefined ? {} : { system }),
            ...(messages === undefined ? {} : { messages })
          }))
    })
  }
  return LanguageModel.make({
    generateText: (provider) =>
      Effect.flatMap(request(provider, "generateText"), (req) =>
        model.generate(req).pipe(
          Effect.mapError((error) => toAiError(error, "generateText")),
          Effect.map((completion): Array<Response.PartEncoded> => [
            { type: "text", text: completion.text },
            { type: "finish", reason: completion.finishReason, usage: fromUsage(completion.usage) }
          ])
        )),
    streamText: (provider) =>
      Stream.unwrap(Effect.map(request(provider, "streamText"), (req) => {
        let started = false
        return model.stream(req).pipe(
          Stream.mapError((error) => toAiError(error, "streamText")),
          Stream.mapConcat((chunk): Array<Response.StreamPartEncoded> => {
            const parts: Array<Response.StreamPartEncoded> = []
            if (!started) {
              started = true
              parts.push({ type: "text-start", id: "0" })
            }
            if (chunk.delta !== "") parts.push({ type: "text-delta", id: "0", delta: chunk.delta })
            if (chunk.finishReason !== undefined) {
              parts.push({ type: "text-end", id: "0" })
              parts.push({
                type: "finish",
                reason: chunk.finishReason,
                usage: chunk.usage === undefined
                  ? { inputTokens: undefined, outputTokens: undefined, totalTokens: undefined }
                  : fromUsage(chunk.usage)
              })
            }
            return parts
          })
        )
      }))
  })
}

/**
 * The `AiModel` in context as `@effect/ai`'s `LanguageModel`.
 *
 * @since 0.1.0
 * @category layers
 */
export const languageModelLayer = (
  options: ToLanguageModelOptions = {}
): Layer.Layer<LanguageModel.LanguageModel, never, AiModel.AiModel> =>
  Layer.effect(LanguageModel.LanguageModel, Effect.flatMap(AiModel.AiModel, (model) => toLanguageModel(model, options)))

/**
 * An `@effect/ai` `AiError` as a typed {@link AiModel.ModelError}; `now` (from the `Clock`) is
 * when the error arrived, for a `Retry-After` given as a date. An `AiError` that carries a
 * `ModelError` as its cause (from {@link toLanguageModel}) gives that error back.
 *
 * @since 0.1.0
 * @category errors
 */
export const fromAiError = (model: string, error: AiError.AiError, now: number): AiModel.ModelError => {
  if (isModelError(error.cause)) return error.cause
  const described = error.description ?? (error.cause instanceof Error ? error.cause.message : undefined)
  // scrubbed, then cut: cut first, and a key cut in two would no longer be found whole
  const description = described === undefined ? undefined : HttpErrors.scrub(described, []).slice(0, HttpErrors.defaults.maxReasonLength)
  switch (error._tag) {
    case "HttpRequestError":
      return error.reason === "Transport"
        ? new AiModel.Unavailable({ model, reason: description ?? "the request could not be sent" })
        : new AiModel.InvalidRequest({ model, reason: description ?? `the request could not be built (${error.reason})` })
    case "HttpResponseError":
      if (error.reason !== "StatusCode") {
        return new AiModel.MalformedResponse({ model, reason: description ?? `the response could not be read (${error.reason})` })
      }
      return HttpErrors.fromResponse({
        model,
        status: error.response.status,
        headers: lowerCase(error.response.headers),
        body: error.body ?? "",
        now
      })
    case "MalformedInput":
      return new AiModel.InvalidRequest({ model, reason: description ?? "the provider refused the input" })
    case "MalformedOutput":
      return new AiModel.MalformedResponse({ model, reason: description ?? "the answer did not decode" })
    case "UnknownError":
      return new AiModel.ProviderError({ model, status: 0, reason: description ?? "an unknown error" })
  }
}

/**
 * A {@link AiModel.ModelError} as the `@effect/ai` `AiError` a provider of `@effect/ai` gives
 * for the same response, the error itself as its `cause`: `RateLimited` is an
 * `HttpResponseError` with status 429 (and `retry-after`), `QuotaExhausted` 429 with an
 * `insufficient_quota` body, `Overloaded` 503, `AuthenticationFailed` and `ProviderError` their
 * status, `InvalidRequest` 400; `Unavailable` is an `HttpRequestError` (`Transport`);
 * `MalformedResponse` is `MalformedOutput`; a timeout, a broken stream or an error without a
 * status is `UnknownError`. The request in an HTTP error is the model's name, as
 * `POST wiz-effect/<model>`: the real one stays inside the `AiModel`.
 *
 * @since 0.1.0
 * @category errors
 */
export const toAiError = (error: AiModel.ModelError, method: string): AiError.AiError => {
  const params = { module: "EffectAi", method, description: error.message, cause: error }
  const request = { method: "POST" as const, url: `wiz-effect/${error.model}`, urlParams: [], hash: Option.none(), headers: {} }
  // Its schema has no `cause`: unvalidated (as `@effect/ai` builds it), the cause is kept.
  const response = (status: number, retryAfter: Duration.Duration | undefined, body: Record<string, string>) =>
    new AiError.HttpResponseError({
      ...params,
      request,
      reason: "StatusCode",
      response: { status, headers: retryAfter === undefined ? {} : { "retry-after": String(Math.ceil(Duration.toSeconds(retryAfter))) } },
      body: JSON.stringify({ error: { message: error.message, ...body } })
    }, { disableValidation: true })
  switch (error._tag) {
    case "RateLimited":
      return response(429, error.retryAfter, { type: "rate_limit_exceeded", code: "rate_limit_exceeded" })
    case "QuotaExhausted":
      return response(429, undefined, { type: "insufficient_quota", code: "insufficient_quota" })
    case "Overloaded":
      return response(503, error.retryAfter, { type: "overloaded" })
    case "AuthenticationFailed":
      return response(error.status, undefined, { type: "authentication_error" })
    case "ProviderError":
      return error.status >= 100 ? response(error.status, error.retryAfter, { type: "server_error" }) : new AiError.UnknownError(params)
    case "InvalidRequest":
      return response(400, undefined, error.contextLengthExceeded === true ? { type: "invalid_request_error", code: "context_length_exceeded" } : { type: "invalid_request_error" })
    case "Unavailable":
      return new AiError.HttpRequestError({ ...params, request, reason: "Transport" })
    case "MalformedResponse":
      return new AiError.MalformedOutput(params)
    case "ModelTimeout":
    case "IncompleteStream":
      return new AiError.UnknownError(params)
  }
}

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

const modelErrorTags: ReadonlySet<string> = new Set(AiModel.ModelError.members.map((member) => member._tag))

/** The last response's headers on this fiber, kept by {@link withResponseHeaders}. */
const responseHeaders = FiberRef.unsafeMake<Readonly<Record<string, string>> | undefined>(undefined)

/** The rate limits the last response's headers report, if {@link withResponseHeaders} kept them. */
const reported: Effect.Effect<AiModel.RateLimits | undefined> = Effect.flatMap(FiberRef.get(responseHeaders), (headers) =>
  headers === undefined ? Effect.succeed(undefined) : Effect.map(Clock.currentTimeMillis, (now) => RateLimitHeaders.rateLimits(headers, now)))

const isModelError = (u: unknown): u is AiModel.ModelError =>
  u instanceof Error && "_tag" in u && typeof u._tag === "string" && modelErrorTags.has(u._tag) && "model" in u

const lowerCase = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) out[name.toLowerCase()] = value
  return out
}

const describe = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error) ?? String(error)

const toPrompt = (request: AiModel.CompletionRequest): Prompt.RawInput =>
  request.system === undefined
    ? [{ role: "user", content: request.prompt }]
    : [{ role: "system", content: request.system }, { role: "user", content: request.prompt }]

/**
 * The request's text from `@effect/ai`'s prompt: system messages, then the turns, each of text
 * parts (an earlier answer's reasoning left out); or what cannot be sent as text.
 */
const fromPrompt = (prompt: Prompt.Prompt): Either.Either<{
  readonly prompt: string
  readonly system: string | undefined
  readonly messages: ReadonlyArray<AiModel.Message> | undefined
}, string> => {
  const system: Array<string> = []
  const turns: Array<AiModel.Message> = []
  for (const message of prompt.content) {
    if (message.role === "system") {
      system.push(message.content)
      continue
    }
    if (message.role === "tool") return Either.left("a tool message")
    const texts: Array<string> = []
    for (const part of message.content) {
      switch (part.type) {
        case "text":
          texts.push(part.text)
          break
        case "reasoning":
          break
        case "file":
          return Either.left(`a ${part.mediaType.startsWith("image/") ? "image" : "file"} part (${part.mediaType}) in a ${message.role} message`)
        default:
          return Either.left(`a ${part.type} part in a ${message.role} message`)
      }
    }
    const text = texts.join("")
    if (text !== "") turns.push({ role: message.role, content: text })
  }
  const only = turns.length === 1 && turns[0]!.role === "user" ? turns[0]!.content : undefined
  return Either.right({
    prompt: only ?? turns.map((turn) => `${turn.role === "user" ? "User" : "Assistant"}: ${turn.content}`).join("\n\n"),
    system: system.length === 0 ? undefined : system.join("\n\n"),
    messages: only === undefined && turns.length > 0 ? turns : undefined
  })
}

/** Only `length` means the answer was cut; `stop`, `tool-calls`, `content-filter` and the rest end it. */
const toFinishReason = (reason: Response.FinishReason): AiModel.FinishReason => (reason === "length" ? "length" : "stop")

const toUsage = (usage: Response.Usage, request: AiModel.CompletionRequest, text: string): AiModel.Usage =>
  new AiModel.Usage({
    promptTokens: usage.inputTokens ?? Tokenizer.count(request.system === undefined ? request.prompt : `${request.system}\n${request.prompt}`),
    completionTokens: usage.outputTokens ?? Tokenizer.count(text)
  }, true)

const fromUsage = (usage: AiModel.Usage): typeof Response.Usage.Encoded => ({
  inputTokens: usage.promptTokens,
  outputTokens: usage.completionTokens,
  totalTokens: usage.totalTokens
})
