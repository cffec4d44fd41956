/**
 * A simulated language model that runs in-process: no network, no weights, no real
 * understanding. It is the default model for `npm start`, the tests and the benchmarks, and it
 * simulates what those need from a provider:
 *
 * - **an answer derived from the prompt**: an extractive summary (the prompt's sentences that
 *   score highest on word frequency, stop words ignored, in their original order) followed by
 *   `Keywords: …` (the most frequent content words). The text depends on the prompt only, so the
 *   same prompt always gets the same answer; it is cut at `maxTokens` (`finishReason: "length"`).
 * - **token usage** counted with {@link Tokenizer.count}, and a **context window** that rejects
 *   a blank prompt or one whose tokens plus `maxTokens` do not fit (`InvalidRequest`).
 * - **latency**: a time to first token, then a time per token, streamed word by word. Each call's
 *   latencies vary by up to ± `jitter`.
 * - **faults**, before the first token: with probability `failureRate` a call answers
 *   `RateLimited` (with a `retryAfter` of 0.5–2 s), `Overloaded`, or hangs until the caller's
 *   timeout interrupts it, in the proportions of `faults`; and a provider-side
 *   `requestsPerMinute` limit over a sliding 60 s window answers `RateLimited` with the time
 *   until a slot frees.
 * - **a tokens-per-minute limit** (`tokensPerMinute`), the way OpenAI and Anthropic meter
 *   tokens: a bucket of that many tokens refilled continuously. A call is charged its prompt
 *   tokens (a continuation's included) plus `maxTokens` when it is admitted and refunded the
 *   part of `maxTokens` it did not use when it completes (or breaks); one that does not fit answers `RateLimited { limit: "tokens" }` with
 *   the time until it would, and one that could never fit (more than the whole limit) is an
 *   `InvalidRequest`. A refused call (by either limit) takes nothing from either.
 * - **rate-limit reports**: with either limit set, every completion (the last chunk of a stream)
 *   and every `RateLimited` carries `rateLimits` — limit, remaining and reset of each window —
 *   as a provider's headers would, so a budget that was never told the limits can learn them.
 * - **a capacity** (`capacity`): the requests it serves at full speed at once. Beyond it each
 *   call's latencies are multiplied by `inFlight / capacity` (so throughput stays flat and
 *   latency grows with the load, as on a saturated server), and a call that would make more than
 *   `overloadAt × capacity` in flight answers `Overloaded` at once, taking no rate-limit slot.
 *   Give a `Ref` to change the capacity mid-run.
 * - **continuation**: given `CompletionRequest.continuation` (the start of its own answer to
 *   that prompt, as a broken stream delivered it), it answers with what follows, and only that,
 *   so the joined text is the uninterrupted answer (`supportsContinuation: true`). A text that is
 *   not the start of its answer fails with `InvalidRequest`.
 * - **faults mid-stream**, on request: with probability `midStreamFailureRate` a streamed call
 *   that started well breaks after at least one chunk and before its final one, failing with
 *   `Unavailable` (`midStreamFailure: "error"`, a connection reset) or just ending without its
 *   final chunk (`"end"`, what a proxy that gives up does). `generate` is never cut.
 * - **an outage**: with `outage`, from `after` (counted from when the model was made) for
 *   `lasting`, the provider cannot be reached: every call fails at once with `Unavailable`
 *   (`reason: "simulated outage"`), before validation, the rate limit and any draw. A call
 *   refused by the outage is not counted and takes no rate-limit slot, so every call outside
 *   the outage gets the answer, latencies and fault it would get without one. This is what
 *   trips a circuit breaker: independent faults at a low `failureRate` rarely come several in
 *   a row.
 *
 * Time is read only through Effect's `Clock` and spent only with `Effect.sleep`, so the model
 * runs in virtual time under `TestClock`. Every random draw comes from Effect's `Random`, made
 * from `(seed, prompt, how many times this prompt was asked before)` (every call that passes
 * validation counts, even one the rate limit refuses): the same seed and the same sequence of
 * calls per prompt give the same answers, latencies and faults however concurrent calls
 * interleave. The model keeps a count per distinct prompt for this (the prompt and a number),
 * and the answers of the last 1,024 prompts it was asked (keeping every answer, ~5 KB each,
 * held ~50 MB after 20,000 distinct tasks).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, EmbeddedModel } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   return yield* model.generate(new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 64 }))
 * }).pipe(Effect.provide(EmbeddedModel.layer({ seed: 42, failureRate: 0.1 })))
 *
 * // unreachable from 3 s after the layer is built until 4 s
 * const down = EmbeddedModel.layer({ seed: 42, outage: { after: "3 seconds", lasting: "1 second" } })
 *
 * // a provider that limits tokens and slows down beyond 16 requests at once
 * const busy = EmbeddedModel.layer({ seed: 42, tokensPerMinute: 90_000, capacity: 16 })
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Config, Duration, Effect, Hash, Layer, Random, Ref, Stream } from "effect"
import type { ConfigError } from "effect"
import { durationUntil } from "../internal/sleepUntil.js"
import * as AiModel from "./AiModel.js"
import * as Tokenizer from "./Tokenizer.js"

/**
 * Relative weights of the injected faults. When `faults` is given, a kind it leaves out has
 * weight 0.
 *
 * @since 0.1.0
 * @category models
 */
export interface Faults {
  /** Answer `RateLimited { limit: "requests" }` with a `retryAfter` between 0.5 and 2 s. */
  readonly rateLimited?: number
  /** Answer `Overloaded`. */
  readonly overloaded?: number
  /** Never answer: the call waits until it is interrupted (by the caller's timeout). */
  readonly hang?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The model's name, reported in completions and errors. */
  readonly name?: string
  /** Seed of every draw. Without one, a seed is drawn once from the ambient `Random` by `make`. */
  readonly seed?: number
  /** Time before the first token, around which each call varies by `jitter`. */
  readonly timeToFirstToken?: Duration.DurationInput
  /** Time per completion token, around which each call varies by `jitter`. */
  readonly perToken?: Duration.DurationInput
  /** Each call scales its latencies by factors drawn from `[1 - jitter, 1 + jitter]` (0..1). */
  readonly jitter?: number
  /** Probability (0..1) that a call fails, split across `faults`. */
  readonly failureRate?: number
  /** How `failureRate` is split between the kinds of fault. */
  readonly faults?: Faults
  /**
   * Provider-side limit on request starts in any 60 s window; beyond it, `RateLimited` with the
   * time until the oldest start leaves the window. A refused request takes no slot.
   */
  readonly requestsPerMinute?: number
  /**
   * Provider-side limit on tokens: a bucket of this many, refilled at this many per minute. A
   * call is charged prompt tokens (with its continuation's) + `maxTokens` when admitted (beyond
   * what is left: `RateLimited { limit: "tokens" }` with the time until it fits) and refunded
   * what it did not use of `maxTokens` when it completes or its stream breaks, or all of it when
   * it fails with an injected `RateLimited` or `Overloaded` or an invalid continuation.
   */
  readonly tokensPerMinute?: number
  /**
   * Calls served at full speed at once (a positive integer, or a `Ref` holding one, to change
   * it mid-run). Beyond it, a call admitted as the n-th in flight has its latencies multiplied
   * by `n / capacity`.
   */
  readonly capacity?: number | Ref.Ref<number>
  /**
   * A call that would be more than `overloadAt × capacity` in flight answers `Overloaded` at
   * once (before the rate limits, taking nothing from them). At least 1.
   */
  readonly overloadAt?: number
  /** Prompt tokens plus `maxTokens` may not exceed this. */
  readonly contextWindow?: number
  /** Probability (0..1) that a stream breaks after its first chunk and before its final one. */
  readonly midStreamFailureRate?: number
  /** How a stream breaks: `error` fails with `Unavailable`, `end` ends without the final chunk. */
  readonly midStreamFailure?: "error" | "end"
  /**
   * A simulated provider outage: from `after` (counted from when `make` ran, by the `Clock`)
   * until `after + lasting`, every call fails at once with `Unavailable`, a call made exactly
   * at `after` included and one made at `after + lasting` not. Such a call counts neither as
   * an ask of its prompt nor against `requestsPerMinute`. None by default.
   */
  readonly outage?: {
    readonly after: Duration.DurationInput
    readonly lasting: Duration.DurationInput
  }
}

/**
 * `name: "embedded"`, `timeToFirstToken: 150 ms`, `perToken: 4 ms`, `jitter: 0.5`,
 * `failureRate: 0`, `faults: { rateLimited: 0.5, overloaded: 0.3, hang: 0.2 }`, no
 * `requestsPerMinute` or `tokensPerMinute` limit, no `capacity` limit, `overloadAt: 2` (a server
 * queues about as much again as it serves before it sheds), `contextWindow: 8192`, no `outage`,
 * `midStreamFailureRate: 0` (`midStreamFailure: "error"` when it is not). With these, 300
 * answers of ~40 tokens at concurrency 8 take about 12 s.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  name: "embedded",
  timeToFirstToken: Duration.millis(150),
  perToken: Duration.millis(4),
  jitter: 0.5,
  failureRate: 0,
  faults: { rateLimited: 0.5, overloaded: 0.3, hang: 0.2 },
  requestsPerMinute: Number.POSITIVE_INFINITY,
  tokensPerMinute: Number.POSITIVE_INFINITY,
  capacity: Number.POSITIVE_INFINITY,
  overloadAt: 2,
  contextWindow: 8192,
  midStreamFailureRate: 0,
  midStreamFailure: "error"
} as const

/**
 * A new simulated model with its own request counters and rate-limit window. An `outage` is
 * timed from now.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<AiModel.AiModel.Service> =>
  Effect.flatMap(
    Effect.all([options.seed === undefined ? Random.nextInt : Effect.succeed(options.seed), Clock.currentTimeMillis]),
    ([seed, now]) => Effect.sync(() => build(options, seed, now))
  )

/**
 * The simulated model as the {@link AiModel.AiModel} service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<AiModel.AiModel> =>
  Layer.effect(AiModel.AiModel, make(options))

/**
 * The simulated model as a layer, its options read from Effect `Config` (each option a `Config`
 * of its own), e.g. a seed and a fault rate from the environment.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { EmbeddedModel } from "wiz-effect"
 *
 * const model = EmbeddedModel.layerConfig({
 *   seed: Config.integer("MODEL_SEED").pipe(Config.withDefault(1)),
 *   failureRate: Config.number("MODEL_FAILURE_RATE").pipe(Config.withDefault(0))
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (options: Config.Config.Wrap<Options>): Layer.Layer<AiModel.AiModel, ConfigError.ConfigError> =>
  Layer.effect(AiModel.AiModel, Effect.flatMap(Config.unwrap(options), make))

// -----------------------------------------------------------------------------
// internal
// -----------------------------------------------------------------------------

/** What the model knows about a prompt: its size and its full answer. */
interface Answer {
  /** `Hash.string` of the prompt, so a call's seed is short to hash. */
  readonly hash: number
  readonly promptTokens: number
  /** The answer split before each run of whitespace, so the pieces concatenate to the text. */
  readonly pieces: ReadonlyArray<string>
  readonly tokens: ReadonlyArray<number>
}

/** How many prompts' answers a model keeps (the least recently asked go first). */
const answersKept = 1_024

/** One admitted call: the part of the answer it returns and the latencies it waits. */
interface Call {
  readonly answer: Answer
  /** The answer's pieces `[from, pieces)` are this call's; `from` > 0 after a continuation. */
  readonly from: number
  /** The end of a piece the continuation cut in the middle, sent before piece `from`. */
  readonly partial: string | undefined
  readonly pieces: number
  /** A stream breaks after this many chunks (`Infinity`: it does not). */
  readonly breakAfter: number
  readonly finishReason: AiModel.FinishReason
  readonly usage: AiModel.Usage
  readonly timeToFirstToken: number
  readonly perToken: number
  /** When the answer is complete: refunds the unused tokens; the report to attach, if any. */
  readonly finish: Effect.Effect<AiModel.RateLimits | undefined>
  /** When a stream breaks after delivering `used` completion tokens: refunds the rest. */
  readonly broke: (used: number) => Effect.Effect<void>
  /** When the call ends however it ends: leaves the in-flight count. */
  readonly leave: Effect.Effect<void>
}

const noReport: Effect.Effect<undefined> = Effect.succeed(undefined)
const noRefund = (_used: number): Effect.Effect<void> => Effect.void

const windowMillis = 60_000

const build = (options: Options, seed: number, madeAt: number): AiModel.AiModel.Service => {
  const name = options.name ?? defaults.name
  const ttft = Duration.toMillis(options.timeToFirstToken ?? defaults.timeToFirstToken)
  const perToken = Duration.toMillis(options.perToken ?? defaults.perToken)
  const jitter = options.jitter ?? defaults.jitter
  const failureRate = options.failureRate ?? defaults.failureRate
  const faults = options.faults ?? defaults.faults
  const rateLimited = faults.rateLimited ?? 0
  const overloaded = faults.overloaded ?? 0
  const hang = faults.hang ?? 0
  const weights = rateLimited + overloaded + hang
  const rpm = options.requestsPerMinute ?? defaults.requestsPerMinute
  const tpm = options.tokensPerMinute ?? defaults.tokensPerMinute
  const capacityOption = options.capacity ?? defaults.capacity
  const overloadAt = options.overloadAt ?? defaults.overloadAt
  const contextWindow = options.contextWindow ?? defaults.contextWindow
  const midStreamRate = options.midStreamFailureRate ?? defaults.midStreamFailureRate
  const midStreamFailure = options.midStreamFailure ?? defaults.midStreamFailure
  if (!(midStreamRate >= 0 && midStreamRate <= 1) || (midStreamFailure !== "error" && midStreamFailure !== "end")) {
    throw new RangeError(`EmbeddedModel: midStreamFailureRate must be in [0, 1] and midStreamFailure "error" or "end"`)
  }
  if (
    !(ttft >= 0 && ttft < Infinity && perToken >= 0 && perToken < Infinity) ||
    !(jitter >= 0 && jitter <= 1) || !(failureRate >= 0 && failureRate <= 1) ||
    !(rateLimited >= 0 && overloaded >= 0 && hang >= 0) || (failureRate > 0 && !(weights > 0)) ||
    !(rpm === Infinity || (Number.isInteger(rpm) && rpm > 0)) ||
    !(tpm === Infinity || (Number.isInteger(tpm) && tpm > 0)) ||
    !(typeof capacityOption !== "number" || capacityOption === Infinity || (Number.isInteger(capacityOption) && capacityOption > 0)) ||
    !(overloadAt >= 1) ||
    !(Number.isInteger(contextWindow) && contextWindow > 0)
  ) {
    throw new RangeError(
      `EmbeddedModel: latencies must be finite and >= 0, jitter and failureRate in [0, 1], fault weights >= 0 ` +
        `and not all 0 when failureRate > 0, requestsPerMinute, tokensPerMinute, capacity and contextWindow ` +
        `positive integers, overloadAt >= 1`
    )
  }
  const random = failureRate > 0 || midStreamRate > 0 || (jitter > 0 && (ttft > 0 || perToken > 0))
  // Two more draws per call only when streams may break, so every other draw stays as it was.
  const draw = midStreamRate > 0 ? drawWithBreak : drawPlain
  // The outage is [downFrom, downUntil); empty without one.
  const outage = options.outage
  const downFrom = outage === undefined ? Infinity : madeAt + Duration.toMillis(outage.after)
  const downUntil = outage === undefined ? Infinity : downFrom + Duration.toMillis(outage.lasting)

  // How often each prompt was asked (for the draws), and the recent answers, in the order last
  // asked (a Map iterates in insertion order: the first key is the least recently asked).
  const asked = new Map<string, number>()
  const answers = new Map<string, Answer>()
  const answerFor = (prompt: string): Answer => {
    let answer = answers.get(prompt)
    if (answer === undefined) {
      const pieces = respond(prompt).match(/\s*\S+/g) ?? []
      answer = { hash: Hash.string(prompt), promptTokens: Tokenizer.count(prompt), pieces, tokens: pieces.map(Tokenizer.count) }
      if (answers.size === answersKept) answers.delete(answers.keys().next().value!)
    } else {
      answers.delete(prompt)
    }
    answers.set(prompt, answer)
    return answer
  }

  // Request starts in the last window, oldest at `head` once the ring holds `rpm` of them.
  const starts: Array<number> = []
  let head = 0
  // The start `k` places after the oldest kept.
  const startAt = (k: number): number => starts[starts.length < rpm ? k : (head + k) % rpm]!
  // When a request slot frees (now or earlier: one is free now).
  const requestFree = (now: number): number => starts.length < rpm ? now : starts[head]! + windowMillis
  const takeRequest = (now: number): void => {
    if (starts.length < rpm) starts.push(now)
    else {
      starts[head] = now
      head = (head + 1) % rpm
    }
  }
  const requestsWindow = (now: number): AiModel.RateLimitWindow => {
    // starts are kept in time order: find the first still in the window
    let lo = 0
    let hi = starts.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (now >= startAt(mid) + windowMillis) lo = mid + 1
      else hi = mid
    }
    const inWindow = starts.length - lo
    const reset = inWindow === 0 ? 0 : startAt(starts.length - 1) + windowMillis - now
    return new AiModel.RateLimitWindow({ limit: rpm, remaining: rpm - inWindow, reset: Duration.millis(reset) }, true)
  }

  // The token bucket: `tokens` left at `tokensAt`, refilled at `tpm` a minute up to `tpm`.
  const tokenRate = tpm / windowMillis
  let tokens = tpm
  let tokensAt = madeAt
  const refillTokens = (now: number): void => {
    if (now > tokensAt) {
      tokens = Math.min(tpm, tokens + (now - tokensAt) * tokenRate)
      tokensAt = now
    }
  }
  // Float refills leave a millionth of a token either way.
  const tokensFit = (cost: number): boolean => tokens + 1e-6 * Math.max(1, cost) >= cost
  const creditTokens = (amount: number, now: number): void => {
    refillTokens(now)
    tokens = Math.min(tpm, tokens + amount)
  }
  const tokensWindow = (): AiModel.RateLimitWindow =>
    new AiModel.RateLimitWindow({
      limit: tpm,
      remaining: Math.max(0, Math.floor(tokens)),
      reset: Duration.millis(Math.max(0, (tpm - tokens) / tokenRate))
    }, true)

  const reports = rpm < Infinity || tpm < Infinity
  const report = (now: number): AiModel.RateLimits | undefined => {
    if (!reports) return undefined
    refillTokens(now)
    return new AiModel.RateLimits({
      ...(rpm < Infinity ? { requests: requestsWindow(now) } : {}),
      ...(tpm < Infinity ? { tokens: tokensWindow() } : {})
    }, true)
  }
  // Refused until `at`: a client that waits `retryAfter` is served.
  const limited = (limit: AiModel.LimitKind, at: number, now: number): AiModel.RateLimited => {
    const rateLimits = report(now)
    return new AiModel.RateLimited({
      model: name,
      limit,
      retryAfter: durationUntil(now, at),
      ...(rateLimits === undefined ? {} : { rateLimits })
    })
  }

  // Calls in flight, for the capacity; read only when a capacity is set.
  let inFlight = 0
  const leaveInFlight = Effect.sync(() => {
    inFlight--
  })
  const capacityNow: Effect.Effect<number> | undefined = typeof capacityOption === "number"
    ? capacityOption === Infinity ? undefined : Effect.succeed(capacityOption)
    : Ref.get(capacityOption)

  /** What an admitted call took: its token charge, how much slower the load makes it, its in-flight slot. */
  interface Admission {
    readonly charged: number
    readonly slowdown: number
    readonly leave: Effect.Effect<void>
  }
  const unlimited: Admission = { charged: 0, slowdown: 1, leave: Effect.void }

  // The provider refused a call it had admitted: the tokens and the in-flight slot come back.
  const refuse = (
    admission: Admission,
    error: (rateLimits: AiModel.RateLimits | undefined) => AiModel.ModelError
  ): Effect.Effect<never, AiModel.ModelError> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (admission.charged > 0) creditTokens(admission.charged, now)
      return Effect.zipRight(admission.leave, Effect.fail(error(report(now))))
    })

  const decide = (
    request: AiModel.CompletionRequest,
    answer: Answer,
    promptTokens: number,
    admission: Admission,
    draws?: Draws
  ): Effect.Effect<Call, AiModel.ModelError> => {
    if (draws !== undefined) {
      const [fault, kind, retryAfter] = draws
      if (fault < failureRate) {
        const k = kind * weights
        if (k >= rateLimited + overloaded) return Effect.never
        return refuse(admission, (rateLimits) =>
          k < rateLimited
            ? new AiModel.RateLimited({
              model: name,
              limit: "requests",
              retryAfter: Duration.millis(Math.round(500 + retryAfter * 1500)),
              ...(rateLimits === undefined ? {} : { rateLimits })
            })
            : new AiModel.Overloaded({ model: name }))
      }
    }
    let pieces = 0
    let completionTokens = 0
    while (pieces < answer.pieces.length && completionTokens + answer.tokens[pieces]! <= request.maxTokens) {
      completionTokens += answer.tokens[pieces]!
      pieces++
    }
    // A continuation: skip the pieces the caller has (its text is counted in `promptTokens`).
    let from = 0
    let partial: string | undefined = undefined
    const continuation = request.continuation
    if (continuation !== undefined && continuation !== "") {
      if (!answer.pieces.slice(0, pieces).join("").startsWith(continuation)) {
        return refuse(admission, () =>
          new AiModel.InvalidRequest({ model: name, reason: "the continuation is not the start of this model's answer" }))
      }
      let offset = 0
      while (from < pieces && offset + answer.pieces[from]!.length <= continuation.length) {
        offset += answer.pieces[from]!.length
        completionTokens -= answer.tokens[from]!
        from++
      }
      if (offset < continuation.length) {
        // The continuation ends inside piece `from`: send the rest of it first.
        partial = answer.pieces[from]!.slice(continuation.length - offset)
        completionTokens += Tokenizer.count(partial) - answer.tokens[from]!
        from++
      }
    }
    const sent = pieces - from + (partial === undefined ? 0 : 1)
    const scale = (draw: number): number => admission.slowdown * (1 - jitter + 2 * jitter * draw)
    // Charges what was used of `maxTokens` and refunds the rest; the report after it.
    const settle = (used: number) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (admission.charged > 0) creditTokens(request.maxTokens - used, now)
        return report(now)
      })
    return Effect.succeed({
      answer,
      from,
      partial,
      pieces,
      // At least one chunk, never the final one: a stream of one chunk cannot break mid-way.
      breakAfter: draws !== undefined && draws.length > 5 && draws[5]! < midStreamRate && sent >= 2
        ? 1 + Math.floor(draws[6]! * (sent - 1))
        : Infinity,
      finishReason: pieces < answer.pieces.length ? "length" : "stop",
      usage: new AiModel.Usage({ promptTokens, completionTokens }, true),
      timeToFirstToken: draws === undefined ? ttft * admission.slowdown : ttft * scale(draws[3]),
      perToken: draws === undefined ? perToken * admission.slowdown : perToken * scale(draws[4]),
      finish: reports ? settle(completionTokens) : noReport,
      broke: admission.charged > 0 ? (used) => Effect.asVoid(settle(used)) : noRefund,
      leave: admission.leave
    })
  }

  // Validate, count the ask, pass the rate limits, then draw this call's fault and latencies.
  const serve = (request: AiModel.CompletionRequest): Effect.Effect<Call, AiModel.ModelError> =>
    Effect.suspend(() => {
      const prompt = request.prompt
      if (prompt.trim() === "") {
        return Effect.fail(new AiModel.InvalidRequest({ model: name, reason: "the prompt is blank" }))
      }
      const entry = answerFor(prompt)
      if (entry.promptTokens + request.maxTokens > contextWindow) {
        return Effect.fail(
          new AiModel.InvalidRequest({
            model: name,
            reason: `prompt (${entry.promptTokens} tokens) + maxTokens (${request.maxTokens}) = ` +
              `${entry.promptTokens + request.maxTokens} tokens, more than the context window of ${contextWindow}`,
            contextLengthExceeded: true
          })
        )
      }
      const before = asked.get(prompt) ?? 0
      asked.set(prompt, before + 1)
      // A continuation is read as prompt: charged, counted in the usage, and reported with it.
      const continuation = request.continuation
      const promptTokens = continuation === undefined || continuation === ""
        ? entry.promptTokens
        : entry.promptTokens + Tokenizer.count(continuation)
      const drawn = (admission: Admission) =>
        random
          ? Effect.flatMap(
            draw(Random.make(`${seed}:${before}:${entry.hash}`)),
            (draws) => decide(request, entry, promptTokens, admission, draws)
          )
          : decide(request, entry, promptTokens, admission)
      if (rpm === Infinity && tpm === Infinity && capacityNow === undefined) return drawn(unlimited)
      const cost = promptTokens + request.maxTokens
      if (cost > tpm) {
        return Effect.fail(
          new AiModel.InvalidRequest({
            model: name,
            reason: `prompt (${promptTokens} tokens) + maxTokens (${request.maxTokens}) = ${cost} tokens, ` +
              `more than the limit of ${tpm} tokens per minute`
          })
        )
      }
      return Effect.flatMap(Effect.all([Clock.currentTimeMillis, capacityNow ?? Effect.succeed(Infinity)]), ([now, capacity]) => {
        const load = inFlight + 1
        if (load > overloadAt * capacity) return Effect.fail(new AiModel.Overloaded({ model: name }))
        const requestAt = rpm === Infinity ? now : requestFree(now)
        if (now < requestAt) return Effect.fail(limited("requests", requestAt, now))
        if (tpm < Infinity) {
          refillTokens(now)
          if (!tokensFit(cost)) return Effect.fail(limited("tokens", now + Math.ceil((cost - tokens) / tokenRate), now))
          tokens -= cost
        }
        if (rpm < Infinity) takeRequest(now)
        const charged = tpm < Infinity ? cost : 0
        if (capacityNow === undefined) return drawn({ charged, slowdown: 1, leave: Effect.void })
        inFlight = load
        // a call that hangs leaves when it is interrupted; an answered one when its answer ends
        return Effect.onInterrupt(drawn({ charged, slowdown: Math.max(1, load / capacity), leave: leaveInFlight }), () => leaveInFlight)
      })
    })

  // Before anything else, an outage refuses the call without touching any count. Without one
  // (or with one lasting 0), no clock read.
  const start = downUntil > downFrom
    ? (request: AiModel.CompletionRequest): Effect.Effect<Call, AiModel.ModelError> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        now >= downFrom && now < downUntil
          ? Effect.fail(new AiModel.Unavailable({ model: name, reason: "simulated outage" }))
          : serve(request))
    : serve

  // A call's in-flight slot is left however its answer ends: the call is admitted and its
  // release installed in one uninterruptible step.
  return {
    name,
    supportsContinuation: true,
    generate: (request) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(start(request)), (call) => {
          const answered = Effect.map(call.finish, (rateLimits) =>
            new AiModel.Completion({
              text: (call.partial ?? "") + call.answer.pieces.slice(call.from, call.pieces).join(""),
              finishReason: call.finishReason,
              usage: call.usage,
              model: name,
              ...(rateLimits === undefined ? {} : { rateLimits })
            }, true))
          const latency = call.timeToFirstToken + call.usage.completionTokens * call.perToken
          return Effect.ensuring(restore(latency > 0 ? Effect.zipRight(Effect.sleep(latency), answered) : answered), call.leave)
        })
      ),
    stream: (request) =>
      Stream.unwrapScoped(Effect.uninterruptibleMask((restore) =>
        Effect.map(Effect.tap(restore(start(request)), (call) => Effect.addFinalizer(() => call.leave)), (call) => {
          const { answer, from, partial, pieces } = call
          // This call's deltas: the rest of a piece a continuation cut, then whole pieces.
          const head = partial === undefined ? 0 : 1
          const sent = head + pieces - from
          const last = Math.max(sent, 1) - 1
          // Completion tokens in the chunks before the one being built.
          let delivered = 0
          const steps: Array<Effect.Effect<AiModel.CompletionChunk, AiModel.Unavailable>> = Array.from({
            length: Math.min(last + 1, call.breakAfter + 1)
          }, (_, i) => {
            // An answer cut before its first word (or a continuation of all of it) still sends its final chunk, empty.
            const piece = from + i - head
            const delta = i >= sent ? "" : i < head ? partial! : answer.pieces[piece]!
            const tokens = i >= sent ? 0 : i < head ? Tokenizer.count(delta) : answer.tokens[piece]!
            const delay = (i === 0 ? call.timeToFirstToken : 0) + tokens * call.perToken
            if (i === call.breakAfter) {
              const broken = Effect.zipRight(
                call.broke(delivered),
                Effect.fail(new AiModel.Unavailable({ model: name, reason: "connection lost mid-stream" }))
              )
              return delay > 0 ? Effect.zipRight(Effect.sleep(delay), broken) : broken
            }
            delivered += tokens
            const chunk = i === last
              ? Effect.map(call.finish, (rateLimits) =>
                new AiModel.CompletionChunk({
                  delta,
                  finishReason: call.finishReason,
                  usage: call.usage,
                  ...(rateLimits === undefined ? {} : { rateLimits })
                }, true))
              : Effect.succeed(new AiModel.CompletionChunk({ delta }, true))
            return delay > 0 ? Effect.zipRight(Effect.sleep(delay), chunk) : chunk
          })
          // `end`: the stream just stops after its last chunk before the break.
          if (call.breakAfter < Infinity && midStreamFailure === "end") {
            steps.pop()
            steps.push(Effect.tap(steps.pop()!, () => call.broke(delivered)))
          }
          return Stream.mapEffect(Stream.fromIterable(steps), (step) => step)
        })
      ))
  }
}

/**
 * A call's draws, always in this order: fault or not, which fault, its retryAfter, the two
 * latency factors; then, when streams may break, whether this one does and after which chunk.
 */
type Draws = readonly [number, number, number, number, number, ...Array<number>]

const drawPlain = (random: Random.Random): Effect.Effect<Draws> =>
  Effect.all([random.next, random.next, random.next, random.next, random.next])

const drawWithBreak = (random: Random.Random): Effect.Effect<Draws> =>
  Effect.all([random.next, random.next, random.next, random.next, random.next, random.next, random.next])

// -----------------------------------------------------------------------------
// the answer
// -----------------------------------------------------------------------------

const stopWords = new Set(
  (
    "a about after again all also am an and any are as at be because been before being between both but by can " +
    "could did do does doing down during each few for from further had has have having he her here hers him his how " +
    "i if in into is it its itself just me more most my no nor not now of off on once only or other our ours out over " +
    "own same she should so some such than that the their theirs them then there these they this those through to too " +
    "under until up very was we were what when where which while who whom why will with would you your yours " +
    // the instructions a prompt opens with are not its subject
    "briefly describe explain give list please summarise summarize summary tell write"
  ).split(" ")
)

const summarySentences = 3
const keywords = 5

/** An extractive summary of the prompt, then its keywords. */
const respond = (prompt: string): string => {
  const sentences = (prompt.match(/[^.!?\n]+[.!?]*/g) ?? []).map((s) => s.trim()).filter((s) => s !== "")
  const words = sentences.map((s) => (s.toLowerCase().match(/[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/gu) ?? []).filter((w) => w.length > 1 && !stopWords.has(w)))
  const frequency = new Map<string, number>()
  for (const list of words) for (const w of list) frequency.set(w, (frequency.get(w) ?? 0) + 1)
  if (frequency.size === 0) return prompt.trim()
  const score = (i: number): number => [...new Set(words[i])].reduce((sum, w) => sum + frequency.get(w)!, 0)
  const chosen = sentences
    .map((_, i) => i)
    .sort((a, b) => score(b) - score(a) || a - b)
    .slice(0, Math.min(summarySentences, Math.ceil(sentences.length / 3)))
    .sort((a, b) => a - b)
  // A Map iterates in insertion order, so the stable sort breaks ties by first appearance.
  const top = [...frequency].sort((a, b) => b[1] - a[1]).slice(0, keywords).map(([w]) => w)
  return `${chosen.map((i) => sentences[i]).join(" ")}\n\nKeywords: ${top.join(", ")}`
}
