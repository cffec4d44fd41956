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
import { Context, Duration, Effect, Option, Predicate, Schema, Stream } from "effect"
import * as ErrorInfo from "../events/ErrorInfo.js"

/**
 * One turn of a conversation: what the user said, or what the model answered.
 *
 * @since 0.1.0
 * @category models
 */
export const Message = Schema.Struct({
  role: Schema.Literal("user", "assistant"),
  content: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type Message = typeof Message.Type

/**
 * What the caller asks of a model.
 *
 * @since 0.1.0
 * @category models
 */
export class CompletionRequest extends Schema.Class<CompletionRequest>("CompletionRequest")({
  /** The text the model answers; with `messages`, the whole conversation written out. */
  prompt: Schema.String,
  /** Upper bound on the completion's length, in tokens. */
  maxTokens: Schema.Int.pipe(Schema.positive()),
  /** Instructions the model follows before the prompt (a chat API's system message). */
  system: Schema.optional(Schema.String),
  /** Sampling temperature, where the provider has one; its own default when absent. */
  temperature: Schema.optional(Schema.Number.pipe(Schema.between(0, 2))),
  /**
   * The start of the answer the caller already has (a stream that broke mid-answer): a model
   * whose service says `supportsContinuation` answers with what follows it, and only that.
   * `maxTokens` bounds the whole answer, this text included, so a continued answer ends where
   * the uninterrupted one would have. Never send it to a model that does not support it.
   */
  continuation: Schema.optional(Schema.String),
  /**
   * A conversation, turn by turn, ending with the user's: a chat API sends each turn as a
   * message of its own; a model without turns reads `prompt`, which holds the same
   * conversation written out (and is what tokens and keys are counted from). Absent: one user
   * turn, `prompt`.
   */
  messages: Schema.optional(Schema.Array(Message))
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
 * One rate-limit window as a provider reports it: the `limit`, what is `remaining` of it, and
 * the time until it is whole again (`reset`, from when the response was received). Any of the
 * three may be missing: providers report what they report.
 *
 * @since 0.1.0
 * @category models
 */
export class RateLimitWindow extends Schema.Class<RateLimitWindow>("RateLimitWindow")({
  limit: Schema.optional(Schema.NonNegative),
  remaining: Schema.optional(Schema.NonNegative),
  reset: Schema.optional(Schema.Duration)
}) {}

/**
 * What a provider said of its rate limits on a response (success or 429): per dimension —
 * requests, tokens (input and output together), or input and output tokens apart (Anthropic).
 * A token budget adopts it to slow down before the provider refuses.
 *
 * @since 0.1.0
 * @category models
 */
export class RateLimits extends Schema.Class<RateLimits>("RateLimits")({
  requests: Schema.optional(RateLimitWindow),
  tokens: Schema.optional(RateLimitWindow),
  inputTokens: Schema.optional(RateLimitWindow),
  outputTokens: Schema.optional(RateLimitWindow)
}) {}

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
  model: Schema.String,
  /** The provider's report of its rate limits on this response, when it gave one. */
  rateLimits: Schema.optional(RateLimits)
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
  usage: Schema.optional(Usage),
  /** On the final chunk: the provider's report of its rate limits, when it gave one. */
  rateLimits: Schema.optional(RateLimits)
}) {}

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * Which rate limit ran out: requests per minute, tokens per minute (input and output
 * together), or input or output tokens apart.
 *
 * @since 0.1.0
 * @category models
 */
export const LimitKind = Schema.Literal("requests", "tokens", "inputTokens", "outputTokens")

/**
 * @since 0.1.0
 * @category models
 */
export type LimitKind = typeof LimitKind.Type

const retryAfterText = (retryAfter: Duration.Duration | undefined): string =>
  retryAfter === undefined ? "" : `, retry after ${Duration.format(retryAfter)}`

/**
 * The provider refused because a rate limit ran out (HTTP 429). `retryAfter` is the provider's
 * own word on when to come back, when it gave one; `rateLimits` what it reported of its limits.
 * It is flow control, not ill health: the provider asks us to slow down.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  model: Schema.String,
  limit: LimitKind,
  retryAfter: Schema.optional(Schema.Duration),
  rateLimits: Schema.optional(RateLimits)
}) {
  override get message(): string {
    return `${this.model}: rate limited on ${this.limit}${retryAfterText(this.retryAfter)}`
  }
}

/**
 * The provider is overloaded (HTTP 503 / 529): try again later, after `retryAfter` when the
 * provider said when (a `Retry-After` header on the 503).
 *
 * @since 0.1.0
 * @category errors
 */
export class Overloaded extends Schema.TaggedError<Overloaded>()("Overloaded", {
  model: Schema.String,
  retryAfter: Schema.optional(Schema.Duration)
}) {
  override get message(): string {
    return `${this.model}: overloaded${retryAfterText(this.retryAfter)}`
  }
}

/**
 * An attempt took longer than its timeout and was interrupted, or the provider said it gave up
 * waiting (HTTP 408, with its `status`).
 *
 * @since 0.1.0
 * @category errors
 */
export class ModelTimeout extends Schema.TaggedError<ModelTimeout>()("ModelTimeout", {
  model: Schema.String,
  timeout: Schema.Duration,
  /** The HTTP status (408) when it was the provider that gave up, after `timeout`. */
  status: Schema.optional(Schema.Int)
}) {
  override get message(): string {
    return this.status === undefined
      ? `${this.model}: no answer within ${Duration.format(this.timeout)}`
      : `${this.model}: the provider gave up with HTTP ${this.status} (request timeout) after ${Duration.format(this.timeout)}`
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
  reason: Schema.String,
  /**
   * The transport's own code for what went wrong, when it gave one: `ECONNREFUSED`,
   * `UND_ERR_SOCKET` (closed before the answer), `HPE_INVALID_CONSTANT` (an answer that is not
   * HTTP), `UND_ERR_HEADERS_OVERFLOW`, a TLS code (`DEPTH_ZERO_SELF_SIGNED_CERT`, ...).
   */
  code: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return `${this.model}: unavailable: ${this.reason}`
  }
}

/**
 * The provider rejected the request itself (HTTP 400: prompt too long, bad parameter).
 * Sending it again cannot help. `contextLengthExceeded` is `true` when the prompt and
 * `maxTokens` do not fit the model's context window, so a caller can shorten the prompt (or
 * pick a model with a longer window) instead of giving up.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  model: Schema.String,
  reason: Schema.String,
  contextLengthExceeded: Schema.optional(Schema.Boolean)
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
 * The provider refused our credentials (HTTP 401 / 403). Sending the request again cannot help;
 * the message never contains the key.
 *
 * @since 0.1.0
 * @category errors
 */
export class AuthenticationFailed extends Schema.TaggedError<AuthenticationFailed>()("AuthenticationFailed", {
  model: Schema.String,
  status: Schema.Int,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.model}: authentication failed (HTTP ${this.status}): ${this.reason}`
  }
}

/**
 * The provider failed on its side (HTTP 500, 502, ...): worth another try, after `retryAfter`
 * when it said when. `retryable` is the provider's own word when it overrode the status's class
 * (OpenAI's `x-should-retry` header): `false` makes the error permanent ({@link isPermanent}),
 * `true` marks a status that is otherwise permanent (a 400, say) as worth another try.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProviderError extends Schema.TaggedError<ProviderError>()("ProviderError", {
  model: Schema.String,
  status: Schema.Int,
  reason: Schema.String,
  retryAfter: Schema.optional(Schema.Duration),
  retryable: Schema.optional(Schema.Boolean)
}) {
  override get message(): string {
    return `${this.model}: provider error (HTTP ${this.status}): ${this.reason}${retryAfterText(this.retryAfter)}`
  }
}

/**
 * A streamed answer ended before its final chunk (no finish reason, no `[DONE]`): the
 * connection dropped or the provider gave up mid-answer. `partial` is the text delivered before
 * it ended, so nothing already shown is lost and a continuation can pick up from it; `cause`
 * is the error that broke it, when one did (an `Unavailable`, an idle timeout), so a broken
 * stream never looks like one that failed before any output.
 *
 * @since 0.1.0
 * @category errors
 */
export class IncompleteStream extends Schema.TaggedError<IncompleteStream>()("IncompleteStream", {
  model: Schema.String,
  partial: Schema.String,
  reason: Schema.String,
  cause: Schema.optional(ErrorInfo.ErrorInfo)
}) {
  override get message(): string {
    return `${this.model}: the stream ended early after ${this.partial.length} characters: ${this.reason}`
  }
}

/**
 * The provider answered with something that is not a valid completion (bad JSON, an HTML
 * error page, a chunk that does not parse).
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
  ProviderError,
  IncompleteStream,
  InvalidRequest,
  QuotaExhausted,
  AuthenticationFailed,
  MalformedResponse
)

/**
 * @since 0.1.0
 * @category errors
 */
export type ModelError = typeof ModelError.Type

const permanentTags: ReadonlySet<string> = new Set(["InvalidRequest", "QuotaExhausted", "AuthenticationFailed", "BudgetExceeded"])

/**
 * Whether an error says that sending the same request again cannot help: a tagged
 * `InvalidRequest`, `QuotaExhausted` or `AuthenticationFailed`, a `ProviderError` the
 * provider marked `retryable: false`, or a token budget's `BudgetExceeded` (the request costs
 * more than the budget can ever hold). Any other value is `false`, so retry policies can use it
 * on errors of any type.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isPermanent = (error: unknown): boolean =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" &&
  (permanentTags.has(error._tag) ||
    (error._tag === "ProviderError" && Predicate.hasProperty(error, "retryable") && error.retryable === false))

/**
 * Whether a model error may go away if the same request is sent again later. `InvalidRequest`,
 * `QuotaExhausted` and `AuthenticationFailed` never do, nor a `ProviderError` the provider
 * marked `retryable: false`; everything else (rate limits, overload, timeouts, transport,
 * server errors, a stream cut short, a garbled answer) may.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTransient = (error: ModelError): boolean => !isPermanent(error)

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
    /** Whether the model honours `CompletionRequest.continuation` (absent: it does not). */
    readonly supportsContinuation?: boolean
  }
}

/**
 * What {@link make} needs: a name and at least one of `generate` and `stream`.
 *
 * @since 0.1.0
 * @category constructors
 */
export type MakeOptions =
  & (
    | { readonly name: string; readonly generate: AiModel.Service["generate"]; readonly stream?: AiModel.Service["stream"] }
    | { readonly name: string; readonly stream: AiModel.Service["stream"]; readonly generate?: AiModel.Service["generate"] }
  )
  & { readonly supportsContinuation?: boolean }

/**
 * A model service from what the provider has: given only `generate`, `stream` answers with one
 * final chunk holding the whole text; given only `stream`, `generate` joins the chunks and
 * fails with {@link IncompleteStream} (carrying the text so far) when the stream ends without
 * its final chunk.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel } from "wiz-effect"
 *
 * const echo = AiModel.make({
 *   name: "echo",
 *   generate: (request) =>
 *     Effect.succeed(new AiModel.Completion({
 *       text: request.prompt,
 *       finishReason: "stop",
 *       usage: new AiModel.Usage({ promptTokens: 1, completionTokens: 1 }),
 *       model: "echo"
 *     }))
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: MakeOptions): AiModel.Service => {
  const { generate, name, stream } = options
  const continues = options.supportsContinuation === true ? { supportsContinuation: true } : {}
  if (generate !== undefined && stream !== undefined) return { name, generate, stream, ...continues }
  if (generate !== undefined) {
    return { name, generate, stream: (request) => Stream.fromEffect(Effect.map(generate(request), toChunk)), ...continues }
  }
  // MakeOptions requires one of the two.
  const streamed = stream as AiModel.Service["stream"]
  return { name, stream: streamed, generate: (request) => collect(name, streamed(request)), ...continues }
}

const toChunk = (completion: Completion): CompletionChunk =>
  new CompletionChunk({
    delta: completion.text,
    finishReason: completion.finishReason,
    usage: completion.usage,
    ...(completion.rateLimits === undefined ? {} : { rateLimits: completion.rateLimits })
  }, true)

/**
 * Joins a streamed answer into one completion; a stream that ends without a chunk carrying
 * both `finishReason` and `usage` fails with {@link IncompleteStream}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const collect = <E>(
  model: string,
  chunks: Stream.Stream<CompletionChunk, E>
): Effect.Effect<Completion, E | IncompleteStream> =>
  Stream.runFold(
    chunks,
    { text: "", last: Option.none<CompletionChunk>() },
    (so, chunk) => ({ text: so.text + chunk.delta, last: Option.some(chunk) })
  ).pipe(
    Effect.flatMap(({ last, text }) => {
      if (Option.isNone(last) || last.value.finishReason === undefined || last.value.usage === undefined) {
        return Effect.fail(new IncompleteStream({ model, partial: text, reason: "the stream ended without its final chunk" }))
      }
      const { finishReason, rateLimits, usage } = last.value
      return Effect.succeed(
        new Completion({ text, finishReason, usage, model, ...(rateLimits === undefined ? {} : { rateLimits }) }, true)
      )
    })
  )
