/**
 * One parser for the rate-limit headers providers send, on every response (a 429 and a
 * success alike), so a caller learns when to come back and a token budget can slow down before
 * the provider refuses. It reads:
 *
 * - `retry-after-ms` (milliseconds; OpenAI, Azure OpenAI) and `retry-after` (delay-seconds or an
 *   HTTP date, RFC 9110);
 * - OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, whose resets are Go
 *   durations (`6m0s`, `1.5s`, `12ms`, `1h2m3.5s`); Groq, Together, Mistral, OpenRouter and vLLM
 *   gateways send the same names;
 * - Azure OpenAI's variants of those: a reset in plain seconds (`x-ratelimit-reset-tokens: 37`),
 *   `-1` for "not reported", and often only the `remaining` headers;
 * - Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
 *   whose resets are RFC 3339 times;
 * - the unsuffixed `x-ratelimit-{limit,remaining,reset}` (OpenRouter, many gateways: a reset in
 *   seconds, or a Unix time in seconds or milliseconds) and the IETF draft's
 *   `ratelimit-{limit,remaining,reset}`, both as the `requests` window.
 *
 * A reset or `retry-after` that names a moment is turned into a delay from `now`, which the
 * caller reads from Effect's `Clock` (so it is exact under `TestClock`); a moment already past
 * is a delay of zero. A value that does not parse is left out: a header never fails a response.
 * So is a delay beyond {@link defaults}`.maxDelay` (a day) or not finite, counted in
 * {@link metrics}`.ignored`.
 * Header names are expected in lower case, as `@effect/platform`'s `Headers` holds them.
 *
 * @example
 * ```ts
 * import { Clock, Effect } from "effect"
 * import { RateLimitHeaders } from "wiz-effect"
 *
 * const program = Effect.map(Clock.currentTimeMillis, (now) =>
 *   RateLimitHeaders.parse({
 *     "retry-after": "2",
 *     "x-ratelimit-limit-requests": "500",
 *     "x-ratelimit-remaining-requests": "0",
 *     "x-ratelimit-reset-requests": "1.5s"
 *   }, now))
 * // { retryAfter: 2 s, rateLimits: { requests: { limit: 500, remaining: 0, reset: 1.5 s } } }
 * ```
 *
 * @since 0.1.0
 */
import { Duration, Metric } from "effect"
import { type LimitKind, RateLimits, RateLimitWindow } from "./AiModel.js"

/**
 * `maxDelay: 1 day`: the longest reset or `retry-after` taken at its word. No provider's window
 * resets further off (a daily quota resets within a day); a hint beyond it, or one that is not
 * a finite number (`x-ratelimit-reset: 99999999999999999999999999h`), is a broken or hostile
 * server, and is ignored like a value that does not parse (and counted in
 * {@link metrics}`.ignored`), so it never holds a call for years.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxDelay: Duration.days(1)
} as const

/**
 * `ignored`: resets and `retry-after`s ignored for being beyond `defaults.maxDelay` or not finite.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  ignored: Metric.counter("wiz_rate_limit_hints_ignored_total", {
    description: "rate-limit resets and Retry-After hints ignored: beyond a day, or not finite",
    incremental: true
  })
} as const

/**
 * Response headers by lower-case name. `@effect/platform`'s `Headers` is one.
 *
 * @since 0.1.0
 * @category models
 */
export type Input = Readonly<Record<string, string | undefined>>

/**
 * What a response said of its rate limits.
 *
 * @since 0.1.0
 * @category models
 */
export interface Parsed {
  /** When to come back: `retry-after-ms`, else `retry-after`. */
  readonly retryAfter: Duration.Duration | undefined
  /** Each window the headers reported; `undefined` when they reported none. */
  readonly rateLimits: RateLimits | undefined
}

/**
 * Reads `retryAfter` and `rateLimits` from a response's headers, `now` being the time the
 * response arrived in milliseconds since the epoch (`Clock.currentTimeMillis`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (headers: Input, now: number): Parsed => ({
  retryAfter: retryAfter(headers, now),
  rateLimits: rateLimits(headers, now)
})

/**
 * The delay a response asked for: `retry-after-ms` when present and valid, else `retry-after`
 * (seconds, or an HTTP date taken relative to `now`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const retryAfter = (headers: Input, now: number): Duration.Duration | undefined => {
  const inMillis = headers["retry-after-ms"]
  if (inMillis !== undefined) {
    const millis = number(inMillis)
    if (millis !== undefined && millis >= 0) {
      const delay = hint(millis)
      if (delay !== undefined) return delay
    }
  }
  const value = headers["retry-after"]
  if (value === undefined) return undefined
  const seconds = number(value)
  if (seconds !== undefined) return seconds >= 0 ? hint(seconds * 1000) : undefined
  const at = httpDate(value)
  return at === undefined ? undefined : hint(Math.max(0, at - now))
}

/**
 * Every rate-limit window the headers report, in any of the formats this module reads.
 *
 * @since 0.1.0
 * @category parsing
 */
export const rateLimits = (headers: Input, now: number): RateLimits | undefined => {
  const requests = window(headers, now, "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests") ??
    window(headers, now, "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset") ??
    window(headers, now, "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset") ??
    window(headers, now, "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
  const tokens = window(headers, now, "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens") ??
    window(headers, now, "anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset")
  const inputTokens = window(
    headers,
    now,
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset"
  )
  const outputTokens = window(
    headers,
    now,
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset"
  )
  if (requests === undefined && tokens === undefined && inputTokens === undefined && outputTokens === undefined) {
    return undefined
  }
  return new RateLimits({
    ...(requests === undefined ? {} : { requests }),
    ...(tokens === undefined ? {} : { tokens }),
    ...(inputTokens === undefined ? {} : { inputTokens }),
    ...(outputTokens === undefined ? {} : { outputTokens })
  }, true)
}

/**
 * The first window that has run out (`remaining: 0`), looked at from the narrowest (input or
 * output tokens) to the broadest (requests), so a 429 can say which limit it hit.
 *
 * @since 0.1.0
 * @category parsing
 */
export const exhausted = (limits: RateLimits | undefined): LimitKind | undefined => {
  if (limits === undefined) return undefined
  for (const kind of exhaustionOrder) {
    if (limits[kind]?.remaining === 0) return kind
  }
  return undefined
}

const exhaustionOrder: ReadonlyArray<LimitKind> = ["inputTokens", "outputTokens", "tokens", "requests"]

/**
 * A Go `time.Duration` as `String()` writes it (`6m0s`, `1.5s`, `12ms`, `1h2m3.5s`, `250µs`,
 * `0s`), or a plain number of seconds.
 *
 * @since 0.1.0
 * @category parsing
 */
export const goDuration = (text: string): Duration.Duration | undefined => {
  const trimmed = text.trim()
  const seconds = number(trimmed)
  if (seconds !== undefined) return seconds >= 0 ? ms(seconds * 1000) : undefined
  if (!goDurationPattern.test(trimmed)) return undefined
  let millis = 0
  for (const [, amount, unit] of trimmed.matchAll(goDurationPart)) {
    millis += Number(amount) * unitMillis[unit!]!
  }
  return ms(millis)
}

/**
 * A reset value in any format providers use, as a delay from `now`: a Go duration or plain
 * seconds; a Unix time in seconds or milliseconds (a number too large to be a delay); an RFC
 * 3339 or HTTP date. A delay beyond `defaults.maxDelay`, or not finite, is `undefined` (and
 * counted in `metrics.ignored`).
 *
 * @since 0.1.0
 * @category parsing
 */
export const reset = (text: string, now: number): Duration.Duration | undefined => {
  const trimmed = text.trim()
  const n = number(trimmed)
  if (n !== undefined) {
    if (n < 0) return undefined
    if (n >= unixMillisFrom) return hint(Math.max(0, n - now))
    if (n >= unixSecondsFrom) return hint(Math.max(0, n * 1000 - now))
    return hint(n * 1000)
  }
  const duration = goDuration(trimmed)
  if (duration !== undefined) return hint(Duration.toMillis(duration))
  const at = httpDate(trimmed) ?? dateTime(trimmed)
  return at === undefined ? undefined : hint(Math.max(0, at - now))
}

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

/** A number this large is a Unix time in milliseconds (2001 onwards), not a delay. */
const unixMillisFrom = 1e12
/** A number this large is a Unix time in seconds (2001 onwards): no reset is 30 years away. */
const unixSecondsFrom = 1e9

const unitMillis: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ns: 1e-6 }
const goDurationPattern = /^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:h|ms|m|s|us|µs|μs|ns))+$/
const goDurationPart = /(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)/g
const numberPattern = /^(?:\d+(?:\.\d*)?|\.\d+|-\d+(?:\.\d*)?)$/

/** A decimal number, or `undefined` (so `""`, `"1e3"` and `"0x10"` are not numbers here). */
const number = (text: string): number | undefined => {
  const trimmed = text.trim()
  return numberPattern.test(trimmed) ? Number(trimmed) : undefined
}

/** A count: a non-negative number; `-1` and the like mean "not reported" (Azure). */
const count = (text: string | undefined): number | undefined => {
  if (text === undefined) return undefined
  const n = number(text)
  return n !== undefined && n >= 0 ? n : undefined
}

const maxDelayMillis = Duration.toMillis(defaults.maxDelay)

/** A provider's hint of `millis`, or `undefined` (counted) when it is beyond any sane bound. */
const hint = (millis: number): Duration.Duration | undefined => {
  if (millis <= maxDelayMillis) return ms(millis)
  metrics.ignored.unsafeUpdate(1, [])
  return undefined
}

/** Milliseconds to the microsecond, so `1.001s` is 1001 ms and not 1000.9999999999999. */
const ms = (millis: number): Duration.Duration => Duration.millis(Math.round(millis * 1000) / 1000)

/** An HTTP date (IMF-fixdate, RFC 850 or asctime, which is GMT though it does not say so). */
const httpDate = (text: string): number | undefined => {
  if (!httpDatePattern.test(text)) return undefined
  const at = Date.parse(asctimePattern.test(text) ? `${text} GMT` : text)
  return Number.isFinite(at) ? at : undefined
}

const httpDatePattern = /^[A-Z][a-z]{2,8},? /
const asctimePattern = /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$/

/** An RFC 3339 date-time with its offset (`2024-06-01T12:00:00.5Z`). */
const dateTime = (text: string): number | undefined => {
  if (!dateTimePattern.test(text)) return undefined
  const at = Date.parse(text)
  return Number.isFinite(at) ? at : undefined
}

const dateTimePattern = /^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)$/

const window = (
  headers: Input,
  now: number,
  limitName: string,
  remainingName: string,
  resetName: string
): RateLimitWindow | undefined => {
  const limitText = headers[limitName]
  const remainingText = headers[remainingName]
  const resetText = headers[resetName]
  if (limitText === undefined && remainingText === undefined && resetText === undefined) return undefined
  const limit = count(limitText)
  const remaining = count(remainingText)
  const resetIn = resetText === undefined ? undefined : reset(resetText, now)
  if (limit === undefined && remaining === undefined && resetIn === undefined) return undefined
  return new RateLimitWindow({
    ...(limit === undefined ? {} : { limit }),
    ...(remaining === undefined ? {} : { remaining }),
    ...(resetIn === undefined ? {} : { reset: resetIn })
  }, true)
}
