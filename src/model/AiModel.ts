/**
 * The language model as a service: one `generate` call and one token `stream`, failing only
 * with a {@link ModelError} that says what happened, so retry, breaker and fallback policies
 * can decide by type instead of by parsing messages.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const completion = yield* model.generate(new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 64 }))
 *   return completion.text
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Context, Duration, Schema } from "effect"
import type { Effect, Stream } from "effect"

/**
 * What the caller asks of a model.
 *
 * @since 0.1.0
 * @category models
 */
export class CompletionRequest extends Schema.Class<CompletionRequest>("CompletionRequest")({
  prompt: Schema.String,
  /** Upper bound on the completion's length, in tokens. */
  maxTokens: Schema.Int.pipe(Schema.positive())
}) {}

/**
 * Why a completion ended: `stop` when the model finished, `length` when `maxTokens` cut it.
 *
 * @since 0.1.0
 * @category models
 */
export const FinishReason = Schema.Literal("stop", "length")

/**
 * @since 0.1.0
 * @category models
 */
export type FinishReason = typeof FinishReason.Type

/**
 * Tokens a call consumed.
 *
 * @since 0.1.0
 * @category models
 */
export class Usage extends Schema.Class<Usage>("Usage")({
  promptTokens: Schema.NonNegativeInt,
  completionTokens: Schema.NonNegativeInt
}) {
  /** Prompt and completion tokens together. */
  get totalTokens(): number {
    return this.promptTokens + this.completionTokens
  }
}

/**
 * A finished completion.
 *
 * @since 0.1.0
 * @category models
 */
export class Completion extends Schema.Class<Completion>("Completion")({
  text: Schema.String,
  finishReason: FinishReason,
  usage: Usage,
  /** The model that answered. */
  model: Schema.String
}) {}

/**
 * One piece of a streamed completion. Text arrives in `delta`; the last chunk carries the
 * `finishReason` and the `usage`, so a stream that ends without it ended early.
 *
 * @since 0.1.0
 * @category models
 */
export class CompletionChunk extends Schema.Class<CompletionChunk>("CompletionChunk")({
  delta: Schema.String,
  finishReason: Schema.optional(FinishReason),
  usage: Schema.optional(Usage)
}) {}

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * The provider refused because a rate limit ran out: `requests` per minute, or `tokens`.
 * `retryAfter` is the provider's own word on when to come back, when it gave one.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  model: Schema.String,
  limit: Schema.Literal("requests", "tokens"),
  retryAfter: Schema.optional(Schema.DurationFromSelf)
}) {
  override get message(): string {
    const after = this.retryAfter === undefined ? "" : `, retry after ${Duration.format(this.retryAfter)}`
    return `${this.model}: rate limited on ${this.limit}${after}`
  }
}

/**
 * The provider is overloaded (HTTP 503 / 529): try again later.
 *
 * @since 0.1.0
 * @category errors
 */
export class Overloaded extends Schema.TaggedError<Overloaded>()("Overloaded", {
  model: Schema.String
}) {
  override get message(): string {
    return `${this.model}: overloaded`
  }
}

/**
 * An attempt took longer than its timeout and was interrupted.
 *
 * @since 0.1.0
 * @category errors
 */
export class ModelTimeout extends Schema.TaggedError<ModelTimeout>()("ModelTimeout", {
  model: Schema.String,
  timeout: Schema.DurationFromSelf
}) {
  override get message(): string {
    return `${this.model}: no answer within ${Duration.format(this.timeout)}`
  }
}

/**
 * The provider could not be reached (connection refused, reset, DNS, TLS).
 *
 * @since 0.1.0
 * @category errors
 */
export class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", {
  model: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.model}: unavailable: ${this.reason}`
  }
}

/**
 * The provider rejected the request itself (HTTP 400: prompt too long, bad parameter).
 * Sending it again cannot help.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  model: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.model}: invalid request: ${this.reason}`
  }
}

/**
 * The account's quota or credit is spent (HTTP 402, or 429 `insufficient_quota`). Waiting a
 * few seconds does not help.
 *
 * @since 0.1.0
 * @category errors
 */
export class QuotaExhausted extends Schema.TaggedError<QuotaExhausted>()("QuotaExhausted", {
  model: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.model}: quota exhausted: ${this.reason}`
  }
}

/**
 * The provider answered with something that is not a valid completion (bad JSON, a stream that
 * ended without its final chunk).
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedResponse extends Schema.TaggedError<MalformedResponse>()("MalformedResponse", {
  model: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.model}: malformed response: ${this.reason}`
  }
}

/**
 * Every way a model call can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export const ModelError = Schema.Union(
  RateLimited,
  Overloaded,
  ModelTimeout,
  Unavailable,
  InvalidRequest,
  QuotaExhausted,
  MalformedResponse
)

/**
 * @since 0.1.0
 * @category errors
 */
export type ModelError = typeof ModelError.Type

/**
 * Whether a model error may go away if the same request is sent again later. `InvalidRequest`
 * and `QuotaExhausted` never do; everything else (rate limits, overload, timeouts, transport,
 * a garbled answer) may.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTransient = (error: ModelError): boolean =>
  error._tag !== "InvalidRequest" && error._tag !== "QuotaExhausted"

// -----------------------------------------------------------------------------
// service
// -----------------------------------------------------------------------------

/**
 * The model service. Provide it with a layer: `EmbeddedModel.layer(...)` for the simulator,
 * or your own implementation.
 *
 * @since 0.1.0
 * @category tags
 */
export class AiModel extends Context.Tag("wiz-effect/AiModel")<AiModel, AiModel.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace AiModel {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** The model's name, reported in completions and errors. */
    readonly name: string
    /** One whole completion. */
    readonly generate: (request: CompletionRequest) => Effect.Effect<Completion, ModelError>
    /** The completion as it is produced; the last chunk carries `finishReason` and `usage`. */
    readonly stream: (request: CompletionRequest) => Stream.Stream<CompletionChunk, ModelError>
  }
}
