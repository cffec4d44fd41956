import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, FastCheck as fc, Metric } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as RateLimitHeaders from "../../src/model/RateLimitHeaders.js"
import { anthropicHeaders, azureHeaders, goDuration, httpDate, openAiHeaders } from "../support/FakeProvider.js"

const now = Date.parse("2025-03-07T12:00:00Z")
const window = (limit?: number, remaining?: number, resetMillis?: number) =>
  new AiModel.RateLimitWindow({
    ...(limit === undefined ? {} : { limit }),
    ...(remaining === undefined ? {} : { remaining }),
    ...(resetMillis === undefined ? {} : { reset: Duration.millis(resetMillis) })
  })

/** Header samples as providers send them (names lower-cased, as `Headers` holds them). */
const samples: ReadonlyArray<{
  readonly name: string
  readonly headers: Record<string, string>
  readonly retryAfter: number | undefined
  readonly rateLimits: AiModel.RateLimits | undefined
}> = [
  {
    name: "OpenAI, a success (Go durations)",
    headers: {
      "x-ratelimit-limit-requests": "60",
      "x-ratelimit-limit-tokens": "150000",
      "x-ratelimit-remaining-requests": "59",
      "x-ratelimit-remaining-tokens": "149984",
      "x-ratelimit-reset-requests": "1s",
      "x-ratelimit-reset-tokens": "6m0s"
    },
    retryAfter: undefined,
    rateLimits: new AiModel.RateLimits({ requests: window(60, 59, 1000), tokens: window(150_000, 149_984, 360_000) })
  },
  {
    name: "OpenAI, a 429 on tokens (retry-after-ms and retry-after, milliseconds in the reset)",
    headers: {
      "retry-after-ms": "20",
      "retry-after": "1",
      "x-ratelimit-limit-requests": "10000",
      "x-ratelimit-limit-tokens": "30000000",
      "x-ratelimit-remaining-requests": "9999",
      "x-ratelimit-remaining-tokens": "0",
      "x-ratelimit-reset-requests": "6ms",
      "x-ratelimit-reset-tokens": "12ms"
    },
    retryAfter: 20,
    rateLimits: new AiModel.RateLimits({ requests: window(10_000, 9_999, 6), tokens: window(30_000_000, 0, 12) })
  },
  {
    name: "Groq (fractional Go durations)",
    headers: {
      "retry-after": "2",
      "x-ratelimit-limit-requests": "14400",
      "x-ratelimit-limit-tokens": "18000",
      "x-ratelimit-remaining-requests": "14370",
      "x-ratelimit-remaining-tokens": "17997",
      "x-ratelimit-reset-requests": "2m59.56s",
      "x-ratelimit-reset-tokens": "7.66s"
    },
    retryAfter: 2000,
    rateLimits: new AiModel.RateLimits({ requests: window(14_400, 14_370, 179_560), tokens: window(18_000, 17_997, 7_660) })
  },
  {
    name: "a Go duration with hours and microseconds",
    headers: { "x-ratelimit-reset-requests": "1h2m3.5s", "x-ratelimit-reset-tokens": "250µs" },
    retryAfter: undefined,
    rateLimits: new AiModel.RateLimits({ requests: window(undefined, undefined, 3_723_500), tokens: window(undefined, undefined, 0.25) })
  },
  {
    name: "Azure OpenAI, a 429 (remaining only, retry-after-ms, a reset in plain seconds)",
    headers: {
      "retry-after-ms": "37000",
      "retry-after": "37",
      "x-ratelimit-remaining-requests": "119",
      "x-ratelimit-remaining-tokens": "0",
      "x-ratelimit-reset-tokens": "37"
    },
    retryAfter: 37_000,
    rateLimits: new AiModel.RateLimits({ requests: window(undefined, 119), tokens: window(undefined, 0, 37_000) })
  },
  {
    name: "Azure OpenAI, -1 for not reported",
    headers: { "x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "0" },
    retryAfter: undefined,
    rateLimits: new AiModel.RateLimits({ tokens: window(undefined, undefined, 0) })
  },
  {
    name: "Anthropic (RFC 3339 resets, input and output tokens apart)",
    headers: {
      "retry-after": "30",
      "anthropic-ratelimit-requests-limit": "50",
      "anthropic-ratelimit-requests-remaining": "0",
      "anthropic-ratelimit-requests-reset": "2025-03-07T12:00:30Z",
      "anthropic-ratelimit-tokens-limit": "100000",
      "anthropic-ratelimit-tokens-remaining": "98000",
      "anthropic-ratelimit-tokens-reset": "2025-03-07T12:00:01.5Z",
      "anthropic-ratelimit-input-tokens-limit": "80000",
      "anthropic-ratelimit-input-tokens-remaining": "79000",
      "anthropic-ratelimit-input-tokens-reset": "2025-03-07T12:00:01Z",
      "anthropic-ratelimit-output-tokens-limit": "20000",
      "anthropic-ratelimit-output-tokens-remaining": "19000",
      "anthropic-ratelimit-output-tokens-reset": "2025-03-07T12:00:02+00:00"
    },
    retryAfter: 30_000,
    rateLimits: new AiModel.RateLimits({
      requests: window(50, 0, 30_000),
      tokens: window(100_000, 98_000, 1_500),
      inputTokens: window(80_000, 79_000, 1_000),
      outputTokens: window(20_000, 19_000, 2_000)
    })
  },
  {
    name: "OpenRouter (unsuffixed, the reset a Unix time in milliseconds)",
    headers: { "x-ratelimit-limit": "20", "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(now + 4_000) },
    retryAfter: undefined,
    rateLimits: new AiModel.RateLimits({ requests: window(20, 0, 4_000) })
  },
  {
    name: "a gateway's reset as a Unix time in seconds",
    headers: { "x-ratelimit-limit": "100", "x-ratelimit-remaining": "3", "x-ratelimit-reset": String(now / 1000 + 60) },
    retryAfter: undefined,
    rateLimits: new AiModel.RateLimits({ requests: window(100, 3, 60_000) })
  },
  {
    name: "the IETF draft's RateLimit-* (reset in seconds)",
    headers: { "ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": "50" },
    retryAfter: undefined,
    rateLimits: new AiModel.RateLimits({ requests: window(100, 0, 50_000) })
  },
  {
    name: "Retry-After as an HTTP date (IMF-fixdate), ten seconds from now",
    headers: { "retry-after": "Fri, 07 Mar 2025 12:00:10 GMT" },
    retryAfter: 10_000,
    rateLimits: undefined
  },
  {
    name: "Retry-After as an obsolete RFC 850 date, and asctime (GMT though it does not say so)",
    headers: { "retry-after": "Friday, 07-Mar-25 12:00:05 GMT" },
    retryAfter: 5_000,
    rateLimits: undefined
  },
  {
    name: "Retry-After in asctime",
    headers: { "retry-after": "Fri Mar  7 12:00:03 2025" },
    retryAfter: 3_000,
    rateLimits: undefined
  },
  {
    name: "a Retry-After date already past is a delay of zero",
    headers: { "retry-after": "Fri, 07 Mar 2025 11:59:00 GMT" },
    retryAfter: 0,
    rateLimits: undefined
  },
  {
    name: "values that do not parse are left out, never fail",
    headers: {
      "retry-after": "soon",
      "retry-after-ms": "-5",
      "x-ratelimit-limit-requests": "lots",
      "x-ratelimit-remaining-requests": "",
      "x-ratelimit-reset-requests": "1 fortnight"
    },
    retryAfter: undefined,
    rateLimits: undefined
  },
  { name: "no rate-limit headers at all", headers: { "content-type": "application/json" }, retryAfter: undefined, rateLimits: undefined }
]

describe("RateLimitHeaders", () => {
  it.each(samples)("a real sample: $name", ({ headers, rateLimits, retryAfter }) => {
    const parsed = RateLimitHeaders.parse(headers, now)
    expect(parsed.retryAfter === undefined ? undefined : Duration.toMillis(parsed.retryAfter)).toBe(retryAfter)
    expect(parsed.rateLimits).toStrictEqual(rateLimits)
  })

  it("exhausted names the narrowest window that ran out, so a 429 says which limit it hit", () => {
    expect(RateLimitHeaders.exhausted(samples[1]!.rateLimits)).toBe("tokens")
    expect(RateLimitHeaders.exhausted(samples[6]!.rateLimits)).toBe("requests")
    expect(RateLimitHeaders.exhausted(new AiModel.RateLimits({ inputTokens: window(1, 0), requests: window(1, 0) }))).toBe("inputTokens")
    expect(RateLimitHeaders.exhausted(samples[0]!.rateLimits)).toBeUndefined()
    expect(RateLimitHeaders.exhausted(undefined)).toBeUndefined()
  })

  it("goDuration reads what Go's Duration.String writes, and refuses what it does not", () => {
    const millis = (text: string) => {
      const d = RateLimitHeaders.goDuration(text)
      return d === undefined ? undefined : Duration.toMillis(d)
    }
    expect(millis("0s")).toBe(0)
    expect(millis("1.001s")).toBe(1001)
    expect(millis("1500ns")).toBe(0.002) // to the microsecond
    expect(millis("1m")).toBe(60_000)
    expect(millis("1.5")).toBe(1500)
    expect(millis("6m0s")).toBe(360_000)
    expect(millis("1d")).toBeUndefined()
    expect(millis("s")).toBeUndefined()
    expect(millis("")).toBeUndefined()
    expect(millis("-1s")).toBeUndefined()
  })

  it.prop(
    "round trip: a Go duration of whole milliseconds parses back to the same milliseconds",
    [fc.integer({ min: 0, max: 48 * 3_600_000 })],
    ([ms]) => {
      expect(Duration.toMillis(RateLimitHeaders.goDuration(goDuration(ms))!)).toBe(ms)
    }
  )

  const windowArb = fc.record({
    limit: fc.integer({ min: 1, max: 10_000_000 }),
    used: fc.integer({ min: 0, max: 10_000_000 }),
    resetMillis: fc.integer({ min: 0, max: 3_600_000 })
  }).map(({ limit, resetMillis, used }) => ({ limit, remaining: Math.max(0, limit - used), resetMillis }))

  it.prop("round trip: OpenAI's headers of any two windows parse back to those windows", [windowArb, windowArb], ([requests, tokens]) => {
    expect(RateLimitHeaders.rateLimits(openAiHeaders(requests, tokens), now)).toStrictEqual(
      new AiModel.RateLimits({
        requests: window(requests.limit, requests.remaining, requests.resetMillis),
        tokens: window(tokens.limit, tokens.remaining, tokens.resetMillis)
      })
    )
  })

  it.prop("round trip: Azure's headers parse back (its resets are whole seconds, rounded up)", [windowArb, windowArb], ([requests, tokens]) => {
    expect(RateLimitHeaders.rateLimits(azureHeaders(requests, tokens), now)).toStrictEqual(
      new AiModel.RateLimits({
        requests: window(undefined, requests.remaining),
        tokens: window(tokens.limit, tokens.remaining, Math.ceil(tokens.resetMillis / 1000) * 1000)
      })
    )
  })

  it.prop(
    "round trip: Anthropic's RFC 3339 resets parse back to the delay from now, to the millisecond",
    [windowArb, windowArb, windowArb, fc.integer({ min: 0, max: 2_000_000_000_000 })],
    ([requests, inputTokens, outputTokens, at]) => {
      expect(RateLimitHeaders.rateLimits(anthropicHeaders(at, { requests, inputTokens, outputTokens }), at)).toStrictEqual(
        new AiModel.RateLimits({
          requests: window(requests.limit, requests.remaining, requests.resetMillis),
          inputTokens: window(inputTokens.limit, inputTokens.remaining, inputTokens.resetMillis),
          outputTokens: window(outputTokens.limit, outputTokens.remaining, outputTokens.resetMillis)
        })
      )
    }
  )

  it.prop(
    "round trip: Retry-After in seconds, as an HTTP date (whole seconds from now), and retry-after-ms",
    [fc.integer({ min: 0, max: 86_400 }), fc.integer({ min: 0, max: 1_900_000_000 }), fc.integer({ min: 0, max: 600_000 })],
    ([seconds, nowSeconds, millis]) => {
      const at = nowSeconds * 1000
      expect(Duration.toMillis(RateLimitHeaders.retryAfter({ "retry-after": String(seconds) }, at)!)).toBe(seconds * 1000)
      expect(Duration.toMillis(RateLimitHeaders.retryAfter({ "retry-after": httpDate(at + seconds * 1000) }, at)!)).toBe(seconds * 1000)
      expect(Duration.toMillis(RateLimitHeaders.retryAfter({ "retry-after-ms": String(millis), "retry-after": "999" }, at)!)).toBe(millis)
    }
  )
  it.effect("issue 18.6: a reset or Retry-After beyond a day, or not finite, is ignored like garbage and counted in a metric", () =>
    Effect.gen(function*() {
      const before = (yield* Metric.value(RateLimitHeaders.metrics.ignored)).count
      const insane = {
        "x-ratelimit-limit": "100",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "99999999999999999999999999h",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-reset-tokens": "9".repeat(400), // Infinity as a number
        "anthropic-ratelimit-input-tokens-reset": new Date(now + 2 * 86_400_000).toISOString(),
        "retry-after-ms": "86400001",
        "retry-after": httpDate(now + 3 * 86_400_000)
      }
      expect(RateLimitHeaders.parse(insane, now)).toStrictEqual({
        retryAfter: undefined,
        rateLimits: new AiModel.RateLimits({ requests: window(100, 0), tokens: window(1000) })
      })
      expect((yield* Metric.value(RateLimitHeaders.metrics.ignored)).count - before).toBe(5)
      // a day exactly is still taken at its word; the 429 that carried the insane reset waits nothing
      expect(RateLimitHeaders.retryAfter({ "retry-after": "86400" }, now)).toStrictEqual(Duration.days(1))
      expect(RateLimitHeaders.reset("24h0m0s", now)).toStrictEqual(Duration.days(1))
      expect(RateLimitHeaders.reset("24h0m1s", now)).toBeUndefined()
    }))
})
