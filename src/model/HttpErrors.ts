/**
 * What an HTTP error response from a model provider means, as a typed {@link AiModel.ModelError}:
 * one table for every provider adapter (the OpenAI-compatible client, the `@effect/ai`
 * adapter), so a 429 means the same thing whoever received it.
 *
 * | status | error |
 * |---|---|
 * | 429 | `RateLimited` (its `retryAfter` and `rateLimits` from the headers); `QuotaExhausted` when the body says `insufficient_quota` |
 * | 402 | `QuotaExhausted` |
 * | 401, 403 | `AuthenticationFailed` (`QuotaExhausted` for a 403 whose body speaks of a quota, as Azure's gateway sends) |
 * | 408 | `ModelTimeout`, with its `status` |
 * | 409 | `ProviderError` (a conflict on the provider's side, retried as openai-node does) |
 * | 400, 404, 413, 422, other 4xx | `InvalidRequest`, with `contextLengthExceeded` when the prompt does not fit |
 * | 503, 529 | `Overloaded` |
 * | other 5xx, anything else | `ProviderError` |
 *
 * An `x-should-retry` header overrides the class of the status, as openai-node lets it:
 * `true` on a permanent status gives a `ProviderError` (transient), `false` on a transient one
 * a `ProviderError` with `retryable: false` (permanent).
 *
 * The reason quotes the provider's own error message (the JSON `error.message`, or the title of
 * an HTML page, shortened), after removing every `secret` the caller names and anything shaped
 * like an API key or a bearer token, so no error built here can carry the key. The reason of an
 * `AuthenticationFailed` never quotes more than the provider's error code and a scrubbed message.
 *
 * @example
 * ```ts
 * import { HttpErrors } from "wiz-effect"
 *
 * HttpErrors.fromResponse({
 *   model: "gpt-4o-mini",
 *   status: 429,
 *   headers: { "retry-after": "2" },
 *   body: `{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}`,
 *   now: 0
 * })
 * // RateLimited { model: "gpt-4o-mini", limit: "requests", retryAfter: 2 s }
 * ```
 *
 * @since 0.1.0
 */
import { Duration } from "effect"
import * as AiModel from "./AiModel.js"
import * as RateLimitHeaders from "./RateLimitHeaders.js"

/**
 * An error response as a provider adapter received it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Response {
  /** The model asked, named in the error. */
  readonly model: string
  readonly status: number
  /** Response headers by lower-case name. */
  readonly headers: RateLimitHeaders.Input
  /** The body as text (it may have been cut at a size limit); empty when there was none. */
  readonly body: string
  /** When the response arrived, in milliseconds since the epoch (`Clock.currentTimeMillis`). */
  readonly now: number
  /** How long the request took, reported by a 408's `ModelTimeout` (with its status); zero when not given. */
  readonly elapsed?: Duration.Duration
  /** Values that must never appear in an error (the API key); removed wherever they occur. */
  readonly secrets?: ReadonlyArray<string>
}

/**
 * What a provider's error body says, read from the JSON shapes providers use
 * (`{ "error": { "message", "type", "code" } }`, `{ "error": "..." }`, `{ "message": ... }`,
 * Anthropic's `{ "type": "error", "error": { "type", "message" } }`), or from an HTML page's
 * title. Every field is already scrubbed.
 *
 * @since 0.1.0
 * @category models
 */
export interface ErrorBody {
  readonly message: string
  /** The error's `type` and `code`, lower-cased, where the body had them. */
  readonly type: string | undefined
  readonly code: string | undefined
  /** The body was an HTML page (a proxy's or load balancer's error page), not the API's JSON. */
  readonly html: boolean
}

/**
 * `maxReasonLength`: the longest reason quoted from a provider's message; the rest is cut with
 * an ellipsis. `secretFragment`: the shortest run of a secret's characters that {@link scrub}
 * removes (8: shorter runs of a random key turn up in ordinary text by chance).
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxReasonLength: 300,
  secretFragment: 8
} as const

/**
 * The typed error for an HTTP error response.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromResponse = (response: Response): AiModel.ModelError => {
  const body = readErrorBody(response.body, response.secrets ?? [])
  const base = byStatus(response, body)
  return override(base, response, body)
}

/**
 * The typed error for an error the provider sent inside a successful response (an `error`
 * event in an SSE stream, or an `error` field in a 200's JSON): classified by its `type` and
 * `code` as {@link fromResponse} classifies a status, or `undefined` when they name nothing
 * known (the caller decides, e.g. `IncompleteStream` with the text so far).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromErrorEvent = (
  model: string,
  body: ErrorBody,
  rateLimits: AiModel.RateLimits | undefined
): AiModel.ModelError | undefined => {
  const kind = `${body.type ?? ""} ${body.code ?? ""}`
  if (/insufficient_quota|billing/.test(kind)) return new AiModel.QuotaExhausted({ model, reason: reason(body) })
  if (/rate_limit/.test(kind)) {
    return new AiModel.RateLimited({
      model,
      limit: limitKind(body, rateLimits),
      ...(rateLimits === undefined ? {} : { rateLimits })
    })
  }
  if (/overloaded/.test(kind)) return new AiModel.Overloaded({ model })
  if (/context_length|exceed_context/.test(kind) || isContextLength(body.message)) {
    return new AiModel.InvalidRequest({ model, reason: contextReason(body), contextLengthExceeded: true })
  }
  if (/invalid_request/.test(kind)) return new AiModel.InvalidRequest({ model, reason: reason(body) })
  if (/authentication|permission/.test(kind)) {
    return new AiModel.AuthenticationFailed({ model, status: 401, reason: reason(body) })
  }
  return undefined
}

/**
 * Reads a provider's error body (JSON or HTML) into an {@link ErrorBody}, removing `secrets`
 * and anything shaped like a credential.
 *
 * @since 0.1.0
 * @category parsing
 */
export const readErrorBody = (text: string, secrets: ReadonlyArray<string>): ErrorBody => {
  const trimmed = text.trim()
  if (trimmed === "") return { message: "", type: undefined, code: undefined, html: false }
  if (trimmed.startsWith("{")) {
    try {
      const json: unknown = JSON.parse(trimmed)
      const parsed = errorObject(json, secrets)
      if (parsed !== undefined) return parsed
    } catch {
      // not JSON after all: quoted as text below
    }
  }
  if (/^<(?:!doctype|html|head|body|\?xml)/i.test(trimmed)) {
    const title = /<title[^>]*>([^<]*)<\/title>/i.exec(trimmed)?.[1]?.trim()
    return {
      message: scrub(title === undefined || title === "" ? "an HTML page" : `an HTML page: ${title}`, secrets),
      type: undefined,
      code: undefined,
      html: true
    }
  }
  return { message: scrub(trimmed, secrets), type: undefined, code: undefined, html: false }
}

/**
 * `text` with every one of `secrets` and anything shaped like a credential (`sk-...`, a bearer
 * token, a JWT) replaced by `[redacted]`. Any run of {@link defaults}`.secretFragment` (8) or
 * more characters of a secret counts as the secret: a server that echoes half the key, or a text
 * cut in the middle of one, leaves none of it. Scrub a server's text before cutting it to length:
 * cut first, and the part of the key the cut left would no longer be whole to be found.
 *
 * @since 0.1.0
 * @category parsing
 */
export const scrub = (text: string, secrets: ReadonlyArray<string>): string => {
  let out = text
  // A short "secret" (an empty key, "x") would redact half the message; keys are long.
  for (const secret of secrets) out = redactFragments(out, secret)
  return out.replace(credentialPattern, "[redacted]")
}

/**
 * Whether a provider's message says the prompt does not fit the model's context window, in the
 * words OpenAI, Azure, vLLM, llama.cpp, Ollama, Mistral and Anthropic use.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isContextLength = (message: string): boolean => contextPattern.test(message)

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

const credentialPattern =
  /\b(?:sk|pk|rk|ak)-[A-Za-z0-9_*.-]{6,}|\bBearer\s+[A-Za-z0-9._~+/=-]+|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g

/**
 * `text` with every run of `secret`'s characters at least `secretFragment` long replaced by one
 * `[redacted]`: each window of that length that is a piece of the secret marks its characters,
 * and each stretch of marked characters (overlapping or touching windows) goes as one.
 */
const redactFragments = (text: string, secret: string): string => {
  const size = defaults.secretFragment
  if (secret.length < size || text.length < size) return text
  const pieces = new Set<string>()
  for (let i = 0; i + size <= secret.length; i++) pieces.add(secret.slice(i, i + size))
  let out = ""
  let copied = 0 // text before this index is in `out` already
  let runStart = -1
  let runEnd = -1
  for (let i = 0; i + size <= text.length; i++) {
    if (!pieces.has(text.slice(i, i + size))) continue
    if (runStart < 0) {
      runStart = i
    } else if (i > runEnd) {
      out += `${text.slice(copied, runStart)}[redacted]`
      copied = runEnd
      runStart = i
    }
    runEnd = i + size
  }
  if (runStart < 0) return text
  return `${out}${text.slice(copied, runStart)}[redacted]${text.slice(runEnd)}`
}

const contextPattern =
  /context[ _-]?(?:length|window|size)|maximum context|prompt is too long|too many tokens|exceeds? the (?:model'?s? )?(?:max(?:imum)?|available) (?:context|token)/i

/** A `type` or `code` field, scrubbed then lower-cased. */
const label = (value: unknown, secrets: ReadonlyArray<string>): string | undefined =>
  typeof value === "string" ? scrub(value, secrets).toLowerCase() : typeof value === "number" ? String(value) : undefined

const errorObject = (json: unknown, secrets: ReadonlyArray<string>): ErrorBody | undefined => {
  if (typeof json !== "object" || json === null) return undefined
  const record = json as Record<string, unknown>
  const inner = record["error"]
  if (typeof inner === "string") {
    // `{ "error": "SyntaxError", "message": "what broke" }` (Express, Fastify, many gateways):
    // the message says what broke, the error only its kind.
    const said = record["message"] ?? record["detail"]
    const message = typeof said !== "string" || said === "" || said === inner
      ? inner
      : said.includes(inner) ? said : `${inner}: ${said}`
    return { message: scrub(message, secrets), type: label(record["type"], secrets), code: label(record["code"], secrets), html: false }
  }
  const source = typeof inner === "object" && inner !== null ? inner as Record<string, unknown> : record
  const message = source["message"] ?? source["detail"] ?? source["msg"]
  const type = label(source["type"], secrets)
  const code = label(source["code"], secrets)
  if (message === undefined && type === undefined && code === undefined) return undefined
  return {
    message: scrub(typeof message === "string" ? message : message === undefined ? "" : JSON.stringify(message), secrets),
    type,
    code,
    html: false
  }
}

const shorten = (text: string): string =>
  text.length <= defaults.maxReasonLength ? text : `${text.slice(0, defaults.maxReasonLength - 1)}…`

const reason = (body: ErrorBody): string => {
  const kind = body.code ?? body.type
  const message = body.message === "" ? "no message" : shorten(body.message)
  return kind === undefined || message.toLowerCase().includes(kind) ? message : `${message} (${kind})`
}

const contextReason = (body: ErrorBody): string => `the prompt does not fit the model's context window: ${reason(body)}`

const limitKind = (body: ErrorBody, rateLimits: AiModel.RateLimits | undefined): AiModel.LimitKind => {
  const text = `${body.message} ${body.type ?? ""} ${body.code ?? ""}`.toLowerCase()
  if (/input[ _-]tokens/.test(text)) return "inputTokens"
  if (/output[ _-]tokens/.test(text)) return "outputTokens"
  if (/\btokens?\b|\btpm\b|tokens_usage/.test(text)) return "tokens"
  if (/\brequests?\b|\brpm\b|\brpd\b/.test(text)) return "requests"
  return RateLimitHeaders.exhausted(rateLimits) ?? "requests"
}

const byStatus = (response: Response, body: ErrorBody): AiModel.ModelError => {
  const { model, status } = response
  const kind = `${body.type ?? ""} ${body.code ?? ""}`
  if (status === 429) {
    if (/insufficient_quota/.test(kind)) return new AiModel.QuotaExhausted({ model, reason: reason(body) })
    const { rateLimits, retryAfter } = RateLimitHeaders.parse(response.headers, response.now)
    const limit = limitKind(body, rateLimits)
    // Without a Retry-After, the reset of the window that ran out is the provider's word on when.
    const after = retryAfter ?? (rateLimits === undefined ? undefined : rateLimits[limit]?.reset)
    return new AiModel.RateLimited({
      model,
      limit,
      ...(after === undefined ? {} : { retryAfter: after }),
      ...(rateLimits === undefined ? {} : { rateLimits })
    })
  }
  if (status === 402) return new AiModel.QuotaExhausted({ model, reason: reason(body) })
  if (status === 401 || status === 403) {
    if (status === 403 && (/insufficient_quota|quota/.test(kind) || /\bquota\b/i.test(body.message))) {
      return new AiModel.QuotaExhausted({ model, reason: reason(body) })
    }
    const what = status === 401 ? "the API key was not accepted" : "access denied"
    return new AiModel.AuthenticationFailed({ model, status, reason: body.message === "" ? what : `${what}: ${reason(body)}` })
  }
  if (status === 408) return new AiModel.ModelTimeout({ model, timeout: response.elapsed ?? Duration.zero, status })
  if (status === 503 || status === 529) {
    const retryAfter = RateLimitHeaders.retryAfter(response.headers, response.now)
    return new AiModel.Overloaded({ model, ...(retryAfter === undefined ? {} : { retryAfter }) })
  }
  if (status >= 400 && status < 500 && status !== 409) {
    if (/context_length|exceed_context/.test(kind) || isContextLength(body.message)) {
      return new AiModel.InvalidRequest({ model, reason: contextReason(body), contextLengthExceeded: true })
    }
    return new AiModel.InvalidRequest({ model, reason: body.html ? `HTTP ${status}: ${body.message}` : reason(body) })
  }
  const retryAfter = RateLimitHeaders.retryAfter(response.headers, response.now)
  return new AiModel.ProviderError({
    model,
    status,
    reason: body.message === "" ? "no message" : body.html ? body.message : reason(body),
    ...(retryAfter === undefined ? {} : { retryAfter })
  })
}

const override = (base: AiModel.ModelError, response: Response, body: ErrorBody): AiModel.ModelError => {
  const header = response.headers["x-should-retry"]?.trim().toLowerCase()
  if (header !== "true" && header !== "false") return base
  const retry = header === "true"
  if (retry === AiModel.isTransient(base)) return base
  return new AiModel.ProviderError({
    model: response.model,
    status: response.status,
    reason: `${body.message === "" ? base._tag : reason(body)} (the provider says x-should-retry: ${header})`,
    retryable: retry
  })
}
