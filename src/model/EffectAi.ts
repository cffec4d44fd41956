/**
 * An adapter between `@effect/ai`'s `LanguageModel` and wiz-effect's {@link AiModel.AiModel}, so
 * every `@effect/ai` provider (OpenAI, Anthropic, Google, Amazon Bedrock, OpenRouter, ...) gets
 * the whole resilience stack: retries that know a 400 from a 429, a breaker per model, hedging,
 * fallback tiers, budgets.
 *
 * - {@link fromLanguageModel} / {@link layer}: a `LanguageModel` as an `AiModel`. Its
 *   `AiError`s become typed {@link AiModel.ModelError}s: an HTTP error response goes through
 *   {@link HttpErrors.fromResponse} (so a 429 is `RateLimited` with its `Retry-After`, a 503
 *   `Overloaded`, a context-length 400 `InvalidRequest`), a transport failure is `Unavailable`,
 *   an answer that does not decode is `MalformedResponse`.
 * - {@link toLanguageModel} / {@link languageModelLayer}: the other way, an `AiModel` (the
 *   embedded simulator, the OpenAI-compatible client) as a text-only `LanguageModel` for code
 *   written against `@effect/ai`. Tools and structured output need a real provider; asking for
 *   them fails with `MalformedInput`. A `ModelError` travels as the `cause` of the `AiError`, so
 *   going back with `fromLanguageModel` returns it unchanged.
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
import { Clock, Effect, Layer, Stream } from "effect"
import * as AiModel from "./AiModel.js"
import * as HttpErrors from "./HttpErrors.js"
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
      Effect.map((response) => {
        const text = response.text
        return new AiModel.Completion({
          text,
          finishReason: toFinishReason(response.finishReason),
          usage: toUsage(response.usage, request, text),
          model: name
        }, true)
      })
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
              return Effect.succeed([
                new AiModel.CompletionChunk({
                  delta: "",
                  finishReason: toFinishReason(part.reason),
                  usage: toUsage(part.usage, request, text)
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
      return Stream.concat(parts, end)
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
 * become the request's `system`; a single user message is the prompt, a longer conversation
 * is written out turn by turn (`User: ...`, `Assistant: ...`).
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
    if (provider.tools.length > 0 || provider.responseFormat.type !== "text") {
      return Effect.fail(
        new AiError.MalformedInput({ module: "EffectAi", method, description: `${model.name} answers with text only: no tools, no structured output` })
      )
    }
    const { prompt, system } = fromPrompt(provider.prompt)
    if (prompt.trim() === "") {
      return Effect.fail(new AiError.MalformedInput({ module: "EffectAi", method, description: "the prompt has no text" }))
    }
    return Effect.succeed(new AiModel.CompletionRequest({ prompt, maxTokens, ...(system === undefined ? {} : { system }) }))
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
 * A {@link AiModel.ModelError} as an `@effect/ai` `AiError`, the error itself as its `cause`:
 * `InvalidRequest` is `MalformedInput`, `MalformedResponse` is `MalformedOutput`, every other
 * error `UnknownError`.
 *
 * @since 0.1.0
 * @category errors
 */
export const toAiError = (error: AiModel.ModelError, method: string): AiError.AiError => {
  const params = { module: "EffectAi", method, description: error.message, cause: error }
  switch (error._tag) {
    case "InvalidRequest":
      return new AiError.MalformedInput(params)
    case "MalformedResponse":
      return new AiError.MalformedOutput(params)
    default:
      return new AiError.UnknownError(params)
  }
}

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

const modelErrorTags: ReadonlySet<string> = new Set(AiModel.ModelError.members.map((member) => member._tag))

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

const fromPrompt = (prompt: Prompt.Prompt): { readonly prompt: string; readonly system: string | undefined } => {
  const system: Array<string> = []
  const turns: Array<{ readonly role: string; readonly text: string }> = []
  for (const message of prompt.content) {
    if (message.role === "system") {
      system.push(message.content)
      continue
    }
    const text = message.content.flatMap((part) => (part.type === "text" ? [part.text] : [])).join("")
    if (text !== "") turns.push({ role: message.role, text })
  }
  const only = turns.length === 1 && turns[0]!.role === "user" ? turns[0]!.text : undefined
  return {
    prompt: only ?? turns.map((turn) => `${turn.role === "user" ? "User" : turn.role === "assistant" ? "Assistant" : "Tool"}: ${turn.text}`).join("\n\n"),
    system: system.length === 0 ? undefined : system.join("\n\n")
  }
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
