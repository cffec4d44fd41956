import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Duration, Effect, Either, Exit, Fiber, Option, Random, Ref, Stream, TestClock } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as Tokenizer from "../../src/model/Tokenizer.js"
import { fractional } from "../support/spinGuard.js"

const article = "The circuit breaker opens after repeated failures. Retries use exponential backoff with jitter. " +
  "A circuit breaker protects the provider from retry storms. Budgets limit how many retries a service may add. " +
  "The breaker closes again after a successful probe. Timeouts bound every attempt."
const summary = "The circuit breaker opens after repeated failures. A circuit breaker protects the provider from retry storms." +
  "\n\nKeywords: breaker, circuit, retries, opens, repeated"

const request = (prompt: string, maxTokens = 100) => new AiModel.CompletionRequest({ prompt, maxTokens })

const instant = { timeToFirstToken: 0, perToken: 0 } as const

/** One call's outcome and how long it took in virtual time, to the µs (end - start of float instants carries ulps). */
const timed = <A>(effect: Effect.Effect<A, AiModel.ModelError>) =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeMillis
    const result = yield* Effect.either(effect)
    return { result, ms: Math.round(((yield* Clock.currentTimeMillis) - start) * 1000) / 1000 }
  })

/** Runs `program` to the end, letting up to an hour of virtual time pass. */
const inVirtualTime = <A, E>(program: Effect.Effect<A, E>) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(program)
    yield* TestClock.adjust("1 hour")
    return yield* Fiber.join(fiber)
  })

/** Lets every forked fiber run until it is suspended. */
const settle = TestClock.adjust(0)

const collect = <A>(stream: Stream.Stream<A, AiModel.ModelError>) =>
  Effect.map(Stream.runCollect(stream), Chunk.toArray)

describe("EmbeddedModel", () => {
  it.effect("answers with an extractive summary and keywords, and counts usage with the Tokenizer", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ ...instant, seed: 1, name: "sim" })
      const completion = yield* model.generate(request(article))
      expect(completion.text).toBe(summary)
      expect(completion.finishReason).toBe("stop")
      expect(completion.model).toBe("sim")
      expect(model.name).toBe("sim")
      expect(completion.usage.promptTokens).toBe(81)
      expect(completion.usage.promptTokens).toBe(Tokenizer.count(article))
      expect(completion.usage.completionTokens).toBe(47)
      expect(completion.usage.completionTokens).toBe(Tokenizer.count(summary))
      // the text depends on the prompt only
      const other = yield* EmbeddedModel.make({ ...instant, seed: 2 })
      expect((yield* other.generate(request(article))).text).toBe(summary)
    }))

  it.effect("a prompt of stop words only is answered with itself, without keywords", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ ...instant, seed: 1 })
      expect((yield* model.generate(request("  What is it?  "))).text).toBe("What is it?")
    }))

  it.effect("a call completes exactly at timeToFirstToken + n × perToken, not a millisecond earlier", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ seed: 1, timeToFirstToken: "100 millis", perToken: "10 millis", jitter: 0 })
      const fiber = yield* Effect.fork(model.generate(request(article)))
      yield* TestClock.adjust(100 + 47 * 10 - 1)
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust(1)
      const completion = yield* Fiber.join(fiber)
      expect(completion.text).toBe(summary)
      expect(yield* Clock.currentTimeMillis).toBe(570)
    }))

  it.effect("stream: the first word after timeToFirstToken plus its tokens, then word by word, the last at the same time as generate", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ seed: 1, timeToFirstToken: "100 millis", perToken: "10 millis", jitter: 0 })
      const fiber = yield* Effect.fork(collect(Stream.mapEffect(
        model.stream(request("Alpha beta gamma. Alpha beta.")),
        (chunk) => Effect.map(Clock.currentTimeMillis, (at) => [chunk.delta, at] as const)
      )))
      yield* TestClock.adjust(1000)
      // answer: "Alpha beta gamma.\n\nKeywords: alpha, beta, gamma", pieces of 2, 1, 3, 3, 3, 2, 2 tokens
      expect(yield* Fiber.join(fiber)).toEqual([
        ["Alpha", 120],
        [" beta", 130],
        [" gamma.", 160],
        ["\n\nKeywords:", 190],
        [" alpha,", 220],
        [" beta,", 240],
        [" gamma", 260]
      ])
    }))

  it.effect("stream chunks concatenate to generate's text; only the last carries finishReason and usage", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ seed: 3 })
      const chunks = yield* inVirtualTime(collect(model.stream(request(article))))
      const completion = yield* inVirtualTime(model.generate(request(article)))
      expect(chunks.map((chunk) => chunk.delta).join("")).toBe(completion.text)
      expect(chunks.length).toBe(completion.text.split(/\s+/).length)
      const last = chunks[chunks.length - 1]!
      expect(last.finishReason).toBe("stop")
      expect(last.usage).toEqual(completion.usage)
      expect(chunks.slice(0, -1).every((chunk) => chunk.finishReason === undefined && chunk.usage === undefined)).toBe(true)
    }))

  it.effect("maxTokens cuts the answer at a word boundary: finishReason length, usage within the limit", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ ...instant, seed: 1 })
      const completion = yield* model.generate(request(article, 10))
      expect(completion.text).toBe("The circuit breaker opens after")
      expect(completion.finishReason).toBe("length")
      expect(completion.usage.completionTokens).toBe(9)
      const chunks = yield* collect(model.stream(request(article, 10)))
      expect(chunks.map((chunk) => chunk.delta).join("")).toBe(completion.text)
      expect(chunks[chunks.length - 1]!.finishReason).toBe("length")
      expect(chunks[chunks.length - 1]!.usage).toEqual(completion.usage)
      // a first word longer than maxTokens leaves an empty completion, still with its final chunk
      const empty = yield* collect(model.stream(request("Internationalization matters.", 1)))
      expect(empty.map((chunk) => [chunk.delta, chunk.finishReason, chunk.usage?.completionTokens])).toEqual([["", "length", 0]])
    }))

  const faulty = { failureRate: 0.4, faults: { rateLimited: 1, overloaded: 1 } } as const
  const sequence = (seed: number) =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ ...faulty, seed })
      const prompts = ["one thing.", "another thing.", "one thing."]
      return yield* inVirtualTime(Effect.forEach(
        Array.from({ length: 30 }, (_, i) => prompts[i % 3]!),
        (prompt) => timed(model.generate(request(prompt)))
      ))
    })

  it.effect("the same seed gives the same completions, latencies and fault sequence; another seed does not", () =>
    Effect.gen(function* () {
      const first = yield* sequence(7)
      const again = yield* sequence(7)
      const other = yield* sequence(8)
      expect(again).toEqual(first)
      expect(other).not.toEqual(first)
      const latencies = first.filter((call) => Either.isRight(call.result)).map((call) => call.ms)
      const faults = first.filter((call) => Either.isLeft(call.result)).map((call) => call.ms)
      // latencies vary per call within ±50% of 150 ms + n × 4 ms (answers of 10 and 12 tokens);
      // faults answer at once
      expect(new Set(latencies).size).toBe(latencies.length)
      for (const ms of latencies) expect(ms >= 75 + 10 * 2 && ms <= 225 + 12 * 6).toBe(true)
      expect(faults.length > 0 && faults.every((ms) => ms === 0)).toBe(true)
    }))

  it.effect("the seed comes from the ambient Random when not given, so Effect.withRandom makes it deterministic", () =>
    Effect.gen(function* () {
      const run = Effect.gen(function* () {
        const model = yield* EmbeddedModel.make(faulty)
        return yield* inVirtualTime(Effect.forEach(Array.from({ length: 10 }), () => timed(model.generate(request("same prompt.")))))
      })
      const first = yield* Effect.withRandom(run, Random.make(11))
      expect(yield* Effect.withRandom(run, Random.make(11))).toEqual(first)
      expect(yield* Effect.withRandom(run, Random.make(12))).not.toEqual(first)
    }))

  it.effect("determinism survives concurrency: sequential and concurrent runs give each prompt the same results", () =>
    Effect.gen(function* () {
      const prompts = ["alpha beta.", "gamma delta.", "epsilon zeta.", "eta theta."]
      const byPrompt = (results: ReadonlyArray<readonly [string, unknown]>) =>
        prompts.map((prompt) => results.filter(([p]) => p === prompt).map(([, r]) => r))
      const run = (order: ReadonlyArray<string>, concurrency: number) =>
        Effect.gen(function* () {
          const model = yield* EmbeddedModel.make({ seed: 5, failureRate: 0.3, faults: { rateLimited: 1, overloaded: 1 } })
          return yield* inVirtualTime(Effect.forEach(
            order,
            (prompt) => Effect.map(timed(model.generate(request(prompt))), (r) => [prompt, r] as const),
            { concurrency }
          ))
        })
      // prompt by prompt, one call at a time
      const sequential = yield* run(prompts.flatMap((prompt) => Array.from({ length: 5 }, () => prompt)), 1)
      // round robin, all at once: the same calls per prompt in the same order, interleaved otherwise
      const concurrent = yield* run(Array.from({ length: 5 }, () => [...prompts].reverse()).flat(), 20)
      expect(byPrompt(concurrent)).toEqual(byPrompt(sequential))
      expect(sequential.some(([, r]) => Either.isLeft(r.result))).toBe(true)
    }))

  it.effect("a prompt asked again after 2,000 others (its answer no longer kept) gets what it gets asked twice in a row: the count outlives the answer", () =>
    Effect.gen(function* () {
      const options = { seed: 1, failureRate: 0.5, faults: { rateLimited: 1, overloaded: 1 } }
      const asks = (model: AiModel.AiModel.Service, prompt: string, n: number) =>
        inVirtualTime(Effect.forEach(Array.from({ length: n }), () => timed(model.generate(request(prompt)))))
      const twice = yield* asks(yield* EmbeddedModel.make(options), article, 4)
      const model = yield* EmbeddedModel.make(options)
      const first = yield* asks(model, article, 2)
      yield* inVirtualTime(Effect.forEach(Array.from({ length: 2_000 }, (_, i) => `Prompt number ${i}.`), (prompt) => Effect.either(model.generate(request(prompt)))))
      const later = yield* asks(model, article, 2)
      expect([...first, ...later]).toEqual(twice)
      // the asks met both an answer and a fault, so the draws were really compared
      expect(twice.some((call) => Either.isRight(call.result)) && twice.some((call) => Either.isLeft(call.result))).toBe(true)
    }))

  it.effect("failureRate is split by the fault weights: RateLimited carries limit requests and a retryAfter of 0.5–2 s", () =>
    Effect.gen(function* () {
      const calls = Array.from({ length: 200 }, (_, i) => request(`prompt number ${i}.`))
      const errors = (options: EmbeddedModel.Options) =>
        Effect.gen(function* () {
          const model = yield* EmbeddedModel.make({ ...instant, seed: 9, ...options })
          return yield* Effect.forEach(calls, (r) => Effect.flip(model.generate(r)).pipe(Effect.orElseSucceed(() => undefined)))
        })
      const limited = yield* errors({ failureRate: 1, faults: { rateLimited: 1 } })
      for (const error of limited) {
        expect(error?._tag).toBe("RateLimited")
        if (error?._tag !== "RateLimited") continue
        expect(error.limit).toBe("requests")
        const ms = Duration.toMillis(error.retryAfter!)
        expect(ms >= 500 && ms <= 2000 && Number.isInteger(ms)).toBe(true)
      }
      expect(new Set(limited.map((e) => e?._tag === "RateLimited" ? Duration.toMillis(e.retryAfter!) : 0)).size > 50).toBe(true)
      expect((yield* errors({ failureRate: 1, faults: { overloaded: 1 } })).every((e) => e?._tag === "Overloaded")).toBe(true)
      const mixed = yield* errors({ failureRate: 1, faults: { rateLimited: 3, overloaded: 1 } })
      const rateLimited = mixed.filter((e) => e?._tag === "RateLimited").length
      expect(mixed.every((e) => e?._tag === "RateLimited" || e?._tag === "Overloaded")).toBe(true)
      expect(rateLimited > 125 && rateLimited < 175).toBe(true)
      const some = yield* errors({ failureRate: 0.25, faults: { rateLimited: 1, overloaded: 1 } })
      const failed = some.filter((e) => e !== undefined).length
      expect(failed > 30 && failed < 70).toBe(true)
      expect(yield* errors({ failureRate: 0 })).toEqual(calls.map(() => undefined))
    }))

  it.effect("a fault comes before the first token: the stream fails at once without a chunk", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ seed: 1, failureRate: 1, faults: { overloaded: 1 } })
      const exit = yield* Effect.exit(collect(model.stream(request(article))))
      expect(exit).toEqual(Exit.fail(new AiModel.Overloaded({ model: "embedded" })))
    }))

  it.effect("hang never answers until interrupted; the caller's timeout decides", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ seed: 1, failureRate: 1, faults: { hang: 1 } })
      const fiber = yield* Effect.fork(model.generate(request(article)))
      const streamed = yield* Effect.fork(collect(model.stream(request(article))))
      yield* TestClock.adjust("1 day")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      expect(Option.isNone(yield* Fiber.poll(streamed))).toBe(true)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
      expect(Exit.isInterrupted(yield* Fiber.interrupt(streamed))).toBe(true)
      const timeout = new AiModel.ModelTimeout({ model: model.name, timeout: Duration.seconds(5) })
      const bounded = yield* Effect.fork(
        model.generate(request(article)).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => timeout }))
      )
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.await(bounded)).toEqual(Exit.fail(timeout))
    }))

  it.effect("requestsPerMinute answers RateLimited with the time until a slot frees, and recovers as the window slides", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ ...instant, seed: 1, requestsPerMinute: 3 })
      const call = Effect.either(model.generate(request(article)))
      const retryAfter = (result: Either.Either<AiModel.Completion, AiModel.ModelError>) =>
        Either.isLeft(result) && result.left._tag === "RateLimited" && result.left.limit === "requests"
          ? Duration.toMillis(result.left.retryAfter!)
          : "answered"
      const at = (ms: number) => Effect.zipRight(TestClock.setTime(ms), Effect.map(call, retryAfter))
      expect(yield* at(0)).toBe("answered")
      expect(yield* at(10_000)).toBe("answered")
      expect(yield* at(20_000)).toBe("answered")
      expect(yield* at(30_000)).toBe(30_000)
      expect(yield* at(59_999)).toBe(1)
      // a refused request took no slot: the start at 0 leaves the window at 60 s
      expect(yield* at(60_000)).toBe("answered")
      expect(yield* at(60_000)).toBe(10_000)
      expect(yield* at(70_000)).toBe("answered")
      expect(yield* at(80_000)).toBe("answered")
      expect(yield* at(80_000)).toBe(40_000)
    }))

  describe("outage", () => {
    const down = new AiModel.Unavailable({ model: "embedded", reason: "simulated outage" })

    it.effect("timed from when the model was made: answers before `after`, Unavailable at once from exactly `after` until just before `after + lasting`, answers again from then", () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(10_000)
        const model = yield* EmbeddedModel.make({ seed: 1, jitter: 0, outage: { after: "500 millis", lasting: "1 second" } })
        // 150 ms to the first token + 47 tokens × 4 ms
        const at = (ms: number) =>
          Effect.zipRight(TestClock.setTime(ms), Effect.fork(timed(model.generate(request(article))))).pipe(
            Effect.tap(() => TestClock.adjust("1 second")),
            Effect.flatMap(Fiber.join),
            Effect.map(({ ms, result }) => [Either.isRight(result) ? result.right.text : result.left, ms] as const)
          )
        expect(yield* at(10_499)).toEqual([summary, 338])
        expect(yield* at(10_500)).toEqual([down, 0])
        expect(yield* at(11_499)).toEqual([down, 0])
        expect(yield* at(11_500)).toEqual([summary, 338])
        expect(yield* at(12_000)).toEqual([summary, 338])
      }))

    it.effect("comes before everything else: a blank prompt is refused as Unavailable; the stream fails without a chunk", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1, outage: { after: 0, lasting: "1 minute" } })
        expect(yield* Effect.flip(model.generate(request(" ")))).toEqual(down)
        expect(yield* Effect.exit(collect(model.stream(request(article))))).toEqual(Exit.fail(down))
        yield* TestClock.setTime(60_000)
        expect(yield* Effect.flip(model.generate(request(" ")))).toEqual(
          new AiModel.InvalidRequest({ model: "embedded", reason: "the prompt is blank" })
        )
        expect((yield* collect(model.stream(request(article)))).map((chunk) => chunk.delta).join("")).toBe(summary)
      }))

    it.effect("a refused call consumes no draw: every call outside the outage gets what it gets from a model without one", () =>
      Effect.gen(function* () {
        const prompts = Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? "one thing." : "another thing."))
        // call k starts at hour k; the outage covers hours 3 to 6
        const calls = (options: EmbeddedModel.Options, hours: ReadonlyArray<number>) =>
          Effect.gen(function* () {
            const model = yield* EmbeddedModel.make({ ...faulty, seed: 7, ...options })
            return yield* Effect.forEach(hours, (hour) =>
              Effect.zipRight(TestClock.setTime(hour * 3_600_000), inVirtualTime(timed(model.generate(request(prompts[hour]!))))))
          })
        const all = Array.from({ length: 12 }, (_, hour) => hour)
        const withOutage = yield* calls({ outage: { after: "3 hours", lasting: "4 hours" } }, all)
        yield* TestClock.setTime(0)
        const outside = all.filter((hour) => hour < 3 || hour >= 7)
        const without = yield* calls({}, outside)
        expect(withOutage.slice(3, 7)).toEqual(Array.from({ length: 4 }, () => ({ result: Either.left(down), ms: 0 })))
        expect([...withOutage.slice(0, 3), ...withOutage.slice(7)]).toEqual(without)
        // every answer has its own latency, so a shifted draw would show
        const latencies = without.filter((call) => Either.isRight(call.result)).map((call) => call.ms)
        expect(latencies.length > 3 && new Set(latencies).size === latencies.length).toBe(true)
      }))

    it.effect("a refused call takes no requestsPerMinute slot", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1, requestsPerMinute: 1, outage: { after: 0, lasting: "1 second" } })
        expect(yield* Effect.flip(model.generate(request(article)))).toEqual(down)
        yield* TestClock.setTime(1_000)
        expect((yield* model.generate(request(article))).text).toBe(summary)
        const limited = yield* Effect.flip(model.generate(request(article)))
        expect(limited._tag === "RateLimited" && Duration.toMillis(limited.retryAfter!)).toBe(60_000)
      }))

    it.effect("an outage lasting 0 refuses nothing", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1, outage: { after: 0, lasting: 0 } })
        expect((yield* model.generate(request(article))).text).toBe(summary)
      }))
  })

  it.effect("InvalidRequest for a blank prompt or one that does not fit the context window (not transient)", () =>
    Effect.gen(function* () {
      const model = yield* EmbeddedModel.make({ ...instant, seed: 1, contextWindow: 100 })
      const blank = yield* Effect.flip(model.generate(request(" \n\t")))
      expect(blank).toEqual(new AiModel.InvalidRequest({ model: "embedded", reason: "the prompt is blank" }))
      expect(AiModel.isTransient(blank)).toBe(false)
      const tooLong = yield* Effect.flip(model.generate(request(article, 20)))
      expect(tooLong).toEqual(new AiModel.InvalidRequest({
        model: "embedded",
        reason: "prompt (81 tokens) + maxTokens (20) = 101 tokens, more than the context window of 100",
        contextLengthExceeded: true
      }))
      expect(yield* Effect.flip(collect(model.stream(request(article, 20))))).toEqual(tooLong)
      expect((yield* model.generate(request(article, 19))).usage.promptTokens).toBe(81)
    }))

  it.effect("layer provides the model as AiModel", () =>
    Effect.gen(function* () {
      const model = yield* AiModel.AiModel
      expect(model.name).toBe("embedded")
      expect((yield* model.generate(request(article))).text).toBe(summary)
    }).pipe(Effect.provide(EmbeddedModel.layer({ ...instant, seed: 1 }))))

  it.effect("options out of range are a defect", () =>
    Effect.gen(function* () {
      const exit = yield* Effect.exit(EmbeddedModel.make({ failureRate: 1.5 }))
      expect(Exit.isFailure(exit) && exit.cause._tag === "Die").toBe(true)
      const noWeights = yield* Effect.exit(EmbeddedModel.make({ failureRate: 0.1, faults: {} }))
      expect(Exit.isFailure(noWeights)).toBe(true)
    }))

  describe("tokensPerMinute", () => {
    // article: 81 prompt tokens; its answer 47 tokens
    const tpmModel = (tokensPerMinute: number, extra: EmbeddedModel.Options = {}) =>
      EmbeddedModel.make({ ...instant, seed: 1, tokensPerMinute, ...extra })

    it.effect("charges prompt + maxTokens when a call is admitted and refunds the unused maxTokens when it completes", () =>
      Effect.gen(function* () {
        const model = yield* tpmModel(600) // 10 tokens a second
        const completion = yield* model.generate(request(article, 200))
        // 81 + 200 charged, 200 - 47 refunded: 600 - 128 left, full again in 12.8 s
        expect(completion.rateLimits).toEqual(new AiModel.RateLimits({
          tokens: new AiModel.RateLimitWindow({ limit: 600, remaining: 472, reset: Duration.millis(12_800) })
        }))
        yield* model.generate(request(article, 200)) // 472 - 128 = 344 left
        const limited = yield* Effect.flip(model.generate(request(article, 300))) // needs 381
        expect(limited).toEqual(new AiModel.RateLimited({
          model: "embedded",
          limit: "tokens",
          retryAfter: Duration.millis(3_700),
          rateLimits: new AiModel.RateLimits({
            tokens: new AiModel.RateLimitWindow({ limit: 600, remaining: 344, reset: Duration.millis(25_600) })
          })
        }))
        // the refused call took nothing: after its retryAfter it fits
        yield* TestClock.adjust("3699 millis")
        expect((yield* Effect.flip(model.generate(request(article, 300))))._tag).toBe("RateLimited")
        yield* TestClock.adjust("1 millis")
        expect((yield* model.generate(request(article, 300))).text).toBe(summary)
      }))

    it.effect("a call that could never fit is an InvalidRequest (sending it again cannot help)", () =>
      Effect.gen(function* () {
        const model = yield* tpmModel(100)
        expect(yield* Effect.flip(model.generate(request(article, 20)))).toEqual(new AiModel.InvalidRequest({
          model: "embedded",
          reason: "prompt (81 tokens) + maxTokens (20) = 101 tokens, more than the limit of 100 tokens per minute"
        }))
      }))

    it.effect("a call refused by the token limit takes no request slot, and one refused for requests no tokens", () =>
      Effect.gen(function* () {
        const model = yield* tpmModel(300, { requestsPerMinute: 2 })
        yield* model.generate(request(article, 100)) // 181 charged, 53 refunded: 172 left
        const byTokens = yield* Effect.flip(model.generate(request(article, 100)))
        expect(byTokens._tag === "RateLimited" && byTokens.limit).toBe("tokens")
        const report = (yield* model.generate(request("one thing.", 10))).rateLimits!
        // two starts in the window (the refused one not counted)
        expect(report.requests).toEqual(new AiModel.RateLimitWindow({ limit: 2, remaining: 0, reset: Duration.millis(60_000) }))
        const refused = yield* Effect.flip(model.generate(request("one thing.", 10)))
        expect([refused._tag, refused._tag === "RateLimited" && refused.limit]).toEqual(["RateLimited", "requests"])
        expect(refused._tag === "RateLimited" && refused.rateLimits?.tokens?.remaining).toBe(report.tokens?.remaining)
      }))

    it.effect("the last chunk of a stream carries the report, after the refund", () =>
      Effect.gen(function* () {
        const model = yield* tpmModel(600)
        const chunks = yield* collect(model.stream(request(article, 200)))
        expect(chunks.slice(0, -1).every((chunk) => chunk.rateLimits === undefined)).toBe(true)
        expect(chunks[chunks.length - 1]!.rateLimits?.tokens?.remaining).toBe(472)
      }))

    it.effect("an injected RateLimited or Overloaded gives the tokens back; without limits nothing carries a report", () =>
      Effect.gen(function* () {
        const faulty = yield* tpmModel(600, { failureRate: 1, faults: { overloaded: 1 } })
        expect((yield* Effect.flip(faulty.generate(request(article, 200))))._tag).toBe("Overloaded")
        const fine = yield* tpmModel(600)
        const limited = yield* EmbeddedModel.make({ ...instant, seed: 1, tokensPerMinute: 600, failureRate: 1, faults: { rateLimited: 1 } })
        const error = yield* Effect.flip(limited.generate(request(article, 200)))
        expect(error._tag === "RateLimited" && error.rateLimits?.tokens?.remaining).toBe(600)
        expect((yield* fine.generate(request(article, 200))).rateLimits?.tokens?.remaining).toBe(472)
        const plain = yield* EmbeddedModel.make({ ...instant, seed: 1 })
        expect((yield* plain.generate(request(article))).rateLimits).toBeUndefined()
      }))
  })

  describe("tokensPerMinute with continuations and mid-stream faults", () => {
    const tpmModel = (tokensPerMinute: number, extra: EmbeddedModel.Options = {}) =>
      EmbeddedModel.make({ ...instant, seed: 1, tokensPerMinute, ...extra })
    const continued = (continuation: string, maxTokens = 200) =>
      new AiModel.CompletionRequest({ prompt: article, maxTokens, continuation })
    const tokensLeft = (model: AiModel.AiModel.Service) =>
      Effect.map(model.generate(request("one thing.", 10)), (completion) =>
        completion.rateLimits!.tokens!.remaining! + completion.usage.promptTokens + completion.usage.completionTokens)

    it.effect("a continuation's tokens are charged as prompt: admitted at prompt + continuation + maxTokens, settled at what it used", () =>
      Effect.gen(function* () {
        const delivered = summary.slice(0, 60)
        const extra = Tokenizer.count(delivered)
        // 81 + 200 fits in 290 without the continuation, not with its 17 tokens
        expect(extra).toBe(17)
        const tight = yield* tpmModel(290)
        expect((yield* tight.generate(request(article, 200))).text).toBe(summary)
        expect(yield* Effect.flip(tight.generate(continued(delivered)))).toEqual(new AiModel.InvalidRequest({
          model: "embedded",
          reason: "prompt (98 tokens) + maxTokens (200) = 298 tokens, more than the limit of 290 tokens per minute"
        }))
        const model = yield* tpmModel(600)
        const completion = yield* model.generate(continued(delivered))
        expect(delivered + completion.text).toBe(summary)
        expect(completion.usage.promptTokens).toBe(81 + extra)
        expect(completion.rateLimits?.tokens?.remaining).toBe(600 - completion.usage.promptTokens - completion.usage.completionTokens)
        // a continuation that is not the answer's start gives back all it was charged
        const fresh = yield* tpmModel(600)
        expect((yield* Effect.flip(fresh.generate(continued("Something else"))))._tag).toBe("InvalidRequest")
        expect(yield* tokensLeft(fresh)).toBe(600)
      }))

    it.effect("a stream that breaks mid-way is charged the tokens it delivered and refunded the rest (error and early end alike)", () =>
      Effect.gen(function* () {
        for (const midStreamFailure of ["error", "end"] as const) {
          const model = yield* tpmModel(600, { seed: 3, midStreamFailureRate: 1, midStreamFailure })
          const seen: Array<AiModel.CompletionChunk> = []
          yield* Effect.exit(Stream.runForEach(model.stream(request(article, 200)), (chunk) => Effect.sync(() => void seen.push(chunk))))
          const delivered = seen.reduce((sum, chunk) => sum + Tokenizer.count(chunk.delta), 0)
          expect(delivered).toBeGreaterThan(0)
          expect(yield* tokensLeft(model)).toBe(600 - 81 - delivered)
        }
      }))
  })

  describe("capacity", () => {
    // jitter 0: 100 ms to the first token, 10 ms a token; "Alpha beta." answers 11 tokens: 210 ms
    const slow = { seed: 1, jitter: 0, timeToFirstToken: "100 millis", perToken: "10 millis" } as const
    const prompt = "Alpha beta."

    it.effect("up to capacity at full speed; beyond it latency grows with the load; beyond overloadAt × capacity, Overloaded at once", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...slow, capacity: 2, overloadAt: 2 })
        const fibers = yield* Effect.forEach(
          Array.from({ length: 5 }),
          () => Effect.fork(timed(model.generate(request(prompt)))),
          { concurrency: "unbounded" }
        )
        yield* TestClock.adjust("1 second")
        const results = yield* Effect.forEach(fibers, Fiber.join)
        expect(results.map(({ ms, result }) => [Either.isRight(result) ? "answered" : result.left._tag, ms])).toEqual([
          ["answered", 210],
          ["answered", 210],
          ["answered", 315], // third in flight: × 3/2
          ["answered", 420], // fourth: × 2
          ["Overloaded", 0] // fifth: more than 2 × 2
        ])
        // all have left: full speed again
        expect((yield* inVirtualTime(timed(model.generate(request(prompt))))).ms).toBe(210)
      }))

    it.effect("a capacity in a Ref can change mid-run: halving it slows the calls admitted after", () =>
      Effect.gen(function* () {
        const capacity = yield* Ref.make(4)
        const model = yield* EmbeddedModel.make({ ...slow, capacity })
        const wave = Effect.forEach(Array.from({ length: 4 }), () => timed(model.generate(request(prompt))), { concurrency: "unbounded" })
        expect((yield* inVirtualTime(wave)).map((r) => r.ms)).toEqual([210, 210, 210, 210])
        yield* Ref.set(capacity, 2)
        expect((yield* inVirtualTime(wave)).map((r) => r.ms)).toEqual([210, 210, 315, 420])
      }))

    it.effect("a stream holds its place until it ends; an interrupted hang gives its place back", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...slow, capacity: 1 })
        const streaming = yield* Effect.fork(collect(model.stream(request(prompt))))
        yield* settle
        // second in flight on a capacity of 1: twice as slow
        expect((yield* inVirtualTime(timed(model.generate(request(prompt))))).ms).toBe(420)
        yield* Fiber.join(streaming)
        const hanging = yield* EmbeddedModel.make({ ...slow, capacity: 1, failureRate: 1, faults: { hang: 1 } })
        const stuck = yield* Effect.fork(hanging.generate(request(prompt)))
        yield* settle
        yield* Fiber.interrupt(stuck)
        const after = yield* Effect.fork(hanging.generate(request(prompt)))
        yield* settle
        yield* Fiber.interrupt(after) // would be Overloaded (more than 2 × 1) had the first not left
        expect(Exit.isInterrupted(yield* Fiber.await(after))).toBe(true)
      }))
  })

  describe("continuation and mid-stream faults (for streaming answers)", () => {
    const deltas = (chunks: ReadonlyArray<AiModel.CompletionChunk>) => chunks.map((chunk) => chunk.delta).join("")

    it.effect("a continuation is answered with what follows it, so delivered + continued text is the uninterrupted answer", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1 })
        expect(model.supportsContinuation).toBe(true)
        const whole = yield* collect(model.stream(request(article)))
        // after every chunk boundary, and in the middle of a word
        const cuts = [...whole.keys()].map((i) => deltas(whole.slice(0, i + 1))).concat([summary.slice(0, 10)])
        for (const delivered of cuts) {
          const rest = yield* collect(model.stream(new AiModel.CompletionRequest({ prompt: article, maxTokens: 100, continuation: delivered })))
          expect(delivered + deltas(rest)).toBe(summary)
          const final = rest[rest.length - 1]!
          expect(final.finishReason).toBe("stop")
          expect(final.usage?.completionTokens).toBe(Tokenizer.count(summary.slice(delivered.length)))
          expect(final.usage?.promptTokens).toBe(Tokenizer.count(article) + Tokenizer.count(delivered))
        }
        const generated = yield* model.generate(new AiModel.CompletionRequest({ prompt: article, maxTokens: 100, continuation: summary.slice(0, 30) }))
        expect(summary.slice(0, 30) + generated.text).toBe(summary)
      }))

    it.effect("maxTokens bounds the whole answer, the continuation included: a continued answer ends where the uninterrupted one does", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1 })
        const cut = yield* model.generate(request(article, 19))
        const rest = yield* collect(model.stream(new AiModel.CompletionRequest({ prompt: article, maxTokens: 19, continuation: cut.text.slice(0, 12) })))
        expect(cut.text.slice(0, 12) + deltas(rest)).toBe(cut.text)
        expect(rest[rest.length - 1]!.finishReason).toBe("length")
      }))

    it.effect("a continuation that is not the start of its own answer fails with InvalidRequest", () =>
      Effect.gen(function* () {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1 })
        const exit = yield* Effect.exit(collect(model.stream(new AiModel.CompletionRequest({ prompt: article, maxTokens: 100, continuation: "Something else" }))))
        expect(exit).toEqual(Exit.fail(new AiModel.InvalidRequest({ model: "embedded", reason: "the continuation is not the start of this model's answer" })))
      }))

    it.effect("midStreamFailureRate: a stream breaks after at least one chunk and before its final one (Unavailable, or an early end); generate is never cut", () =>
      Effect.gen(function* () {
        const broken = yield* EmbeddedModel.make({ ...instant, seed: 3, midStreamFailureRate: 1 })
        const ended = yield* EmbeddedModel.make({ ...instant, seed: 3, midStreamFailureRate: 1, midStreamFailure: "end" })
        const whole = yield* collect((yield* EmbeddedModel.make({ ...instant, seed: 3 })).stream(request(article)))
        for (let i = 0; i < 20; i++) {
          const seen: Array<AiModel.CompletionChunk> = []
          const exit = yield* Effect.exit(Stream.runForEach(broken.stream(request(article)), (chunk) => Effect.sync(() => void seen.push(chunk))))
          expect(exit).toEqual(Exit.fail(new AiModel.Unavailable({ model: "embedded", reason: "connection lost mid-stream" })))
          expect(seen.length >= 1 && seen.length < whole.length).toBe(true)
          expect(summary.startsWith(deltas(seen))).toBe(true)
          const early = yield* collect(ended.stream(request(article)))
          expect(early.length >= 1 && early.length < whole.length && early.every((chunk) => chunk.finishReason === undefined)).toBe(true)
        }
        expect((yield* broken.generate(request(article))).text).toBe(summary)
      }))

    it.effect("mid-stream faults add draws after the others: with them on, every start fault and latency is what it was", () =>
      Effect.gen(function* () {
        const run = (midStreamFailureRate: number) =>
          Effect.gen(function* () {
            const model = yield* EmbeddedModel.make({ ...faulty, seed: 7, midStreamFailureRate })
            return yield* inVirtualTime(Effect.forEach(Array.from({ length: 12 }), () => timed(model.generate(request(article)))))
          })
        expect(yield* run(0.5)).toEqual(yield* run(0))
      }))
  })

  it.effect.prop(
    "issue 17.1: a call refused by requestsPerMinute at a fractional time is served when it comes back after its retryAfter",
    { first: fractional(0, 1e7), later: fractional(0, 60_000) },
    ({ first, later }) =>
      Effect.gen(function*() {
        const model = yield* EmbeddedModel.make({ ...instant, seed: 1, requestsPerMinute: 1 })
        yield* TestClock.setTime(first)
        yield* model.generate(request(article))
        const refusedAt = first + later
        yield* TestClock.setTime(refusedAt)
        const refused = yield* Effect.flip(model.generate(request(article)))
        expect(refused._tag).toBe("RateLimited")
        const retryAfter = refused._tag === "RateLimited" ? Duration.toMillis(refused.retryAfter!) : NaN
        expect(refusedAt + retryAfter).toBeGreaterThanOrEqual(first + 60_000)
        yield* TestClock.setTime(refusedAt + retryAfter)
        expect((yield* model.generate(request(article))).text).toBe(summary)
      }),
    { fastCheck: { numRuns: 25 } }
  )
})
