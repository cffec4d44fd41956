import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Either, Exit, FastCheck as fc, Fiber, Stream, TestClock } from "effect"
import * as AiModel from "../../src/model/AiModel.js"
import * as EmbeddedModel from "../../src/model/EmbeddedModel.js"
import * as Hedge from "../../src/policy/Hedge.js"
import * as Retry from "../../src/policy/Retry.js"
import * as StreamingAnswer from "../../src/stream/StreamingAnswer.js"
import { fractional, noSpin } from "../support/spinGuard.js"

const usage = new AiModel.Usage({ promptTokens: 1, completionTokens: 1 })

/** One attempt of a scripted source: chunks (ms after the previous one, text), then how it ends. */
interface Script {
  readonly startError?: AiModel.ModelError
  readonly chunks: ReadonlyArray<readonly [ms: number, delta: string]>
  /** `final`: the last chunk carries finishReason and usage; `none`: it just ends; or it fails; or it hangs. */
  readonly end: "final" | "none" | "hang" | AiModel.ModelError
}

/** A source that plays `scripts[n]` on its n-th call (the last one again after that), and counts what it did. */
const scripted = (name: string, scripts: ReadonlyArray<Script>, canContinue = false) => {
  const log = { calls: [] as Array<string>, produced: 0, closed: 0 }
  const source: StreamingAnswer.Source = {
    name,
    canContinue,
    stream: (delivered) =>
      Stream.suspend(() => {
        const script = scripts[Math.min(log.calls.length, scripts.length - 1)]!
        log.calls.push(delivered)
        if (script.startError !== undefined) return Stream.fail(script.startError)
        const last = script.chunks.length - 1
        const body = Stream.mapEffect(Stream.fromIterable(script.chunks.map((step, i) => [step, i] as const)), ([[ms, delta], i]) =>
          Effect.as(
            Effect.sleep(ms),
            i === last && script.end === "final"
              ? new AiModel.CompletionChunk({ delta, finishReason: "stop", usage })
              : new AiModel.CompletionChunk({ delta })
          )).pipe(Stream.tap(() => Effect.sync(() => void log.produced++)))
        const end = script.end
        const tail: Stream.Stream<AiModel.CompletionChunk, AiModel.ModelError> = end === "final" || end === "none"
          ? Stream.empty
          : end === "hang"
          ? Stream.never
          : Stream.fail(end)
        return Stream.concat(body, tail)
      }).pipe(Stream.ensuring(Effect.sync(() => void log.closed++)))
  }
  return { source, log }
}

/** Reads `stream` to its end, each chunk tagged with the virtual time it arrived (from the start of reading). */
const read = <E>(stream: Stream.Stream<AiModel.CompletionChunk, E>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const seen: Array<string> = []
    const end = yield* stream.pipe(
      Stream.runForEach((chunk) => Effect.map(Clock.currentTimeMillis, (t) => void seen.push(`${chunk.delta}@${t - start}`))),
      Effect.either
    )
    return { seen, end, at: (yield* Clock.currentTimeMillis) - start }
  })

/** Runs `program` in virtual time (forks it, moves the clock an hour, joins). */
const virtual = <A, E>(program: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(program)
    yield* TestClock.adjust("1 hour")
    return yield* Fiber.join(fiber)
  })

const text = (seen: ReadonlyArray<string>) => seen.map((s) => s.slice(0, s.lastIndexOf("@"))).join("")
const overloaded = new AiModel.Overloaded({ model: "a" })
const noRetryWait = Retry.make({ base: "100 millis", jitter: "none", maxAttempts: 3 })

describe("StreamingAnswer", () => {
  it.effect("passes the chunks through as they arrive and ends after the final chunk", () =>
    Effect.gen(function*() {
      const a = scripted("a", [{ chunks: [[100, "The"], [20, " answer"], [20, "."]], end: "final" }])
      const result = yield* virtual(read(StreamingAnswer.make()([a.source])))
      expect(result.seen).toEqual(["The@100", " answer@120", ".@140"])
      expect(Either.isRight(result.end)).toBe(true)
      expect(a.log.closed).toBe(1)
    }))

  describe("timeouts", () => {
    it.effect("first-chunk timeout fails at exactly firstChunk with ModelTimeout naming the source, and closes its stream", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: [[5000, "late"]], end: "final" }])
        const result = yield* virtual(read(StreamingAnswer.make({ firstChunk: "1 second" })([a.source])))
        expect(result.end).toEqual(Either.left(new AiModel.ModelTimeout({ model: "a", timeout: Duration.seconds(1) })))
        expect(result.at).toBe(1000)
        expect(a.log.closed).toBe(1)
      }))

    it.effect("before the first chunk the timeout is retried by the policy: the retry's chunks follow, at exact times", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: [[5000, "late"]], end: "final" }, { chunks: [[200, "Hi"], [10, "!"]], end: "final" }])
        const answer = StreamingAnswer.make({ firstChunk: "1 second", policy: (start) => noRetryWait.apply(start) })
        const result = yield* virtual(read(answer([a.source])))
        // timeout at 1000, no backoff (the 1 s waited covers the 100 ms: issue 17.9), the
        // second attempt's first chunk 200 ms later
        expect(result.seen).toEqual(["Hi@1200", "!@1210"])
        expect(a.log.calls).toEqual(["", ""])
        expect(a.log.closed).toBe(2)
      }))

    it.effect("idle timeout fires exactly betweenChunks after the last chunk; a slow but steady stream is never cut", () =>
      Effect.gen(function*() {
        const stalls = scripted("a", [{ chunks: [[50, "One"], [300, " two"]], end: "hang" }])
        const answer = StreamingAnswer.make({ betweenChunks: "500 millis" })
        const stalled = yield* virtual(read(answer([stalls.source])))
        expect(stalled.seen).toEqual(["One@50", " two@350"])
        expect(stalled.end).toEqual(Either.left(new AiModel.ModelTimeout({ model: "a", timeout: Duration.millis(500) })))
        expect(stalled.at).toBe(850)
        expect(stalls.log.closed).toBe(1)
        const steady = scripted("b", [{ chunks: Array.from({ length: 10 }, () => [499, "."] as const), end: "final" }])
        const ok = yield* virtual(read(answer([steady.source])))
        expect([ok.seen.length, ok.at, Either.isRight(ok.end)]).toEqual([10, 4990, true])
      }))
  })

  describe("deadline: an answer's whole life (issue 18.2)", () => {
    const trickle = (ms: number, count: number) => Array.from({ length: count }, () => [ms, "."] as const)

    it.effect("issue 18.2: a stream that keeps trickling ends at the deadline with DeadlineExceeded, though no gap trips betweenChunks", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: trickle(300, 1000), end: "final" }])
        const answer = StreamingAnswer.make({ betweenChunks: "1 second", deadline: "10 seconds" })
        const result = yield* virtual(read(answer([a.source])))
        expect(result.seen.length).toBe(33) // at 300, 600, ... 9900
        expect(result.end).toEqual(Either.left(
          new Retry.DeadlineExceeded({ deadline: Duration.seconds(10), attempts: 1, waitingFor: "the rest of the answer (33 characters delivered)" })
        ))
        expect(result.at).toBe(10_000)
        expect(a.log.closed).toBe(1)
        // with no idle timeout at all, the deadline still holds
        const b = scripted("b", [{ chunks: trickle(300, 1000), end: "final" }])
        const bare = yield* virtual(read(StreamingAnswer.make({ betweenChunks: Duration.infinity, deadline: "2 seconds" })([b.source])))
        expect([bare.seen.length, bare.at, Either.isLeft(bare.end) && bare.end.left._tag]).toEqual([6, 2000, "DeadlineExceeded"])
      }))

    it.effect("issue 18.2: the deadline bounds the start too: retries before the first chunk end at it", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: [[60_000, "late"]], end: "final" }])
        const answer = StreamingAnswer.make({ firstChunk: "3 seconds", deadline: "5 seconds", policy: (start) => noRetryWait.apply(start) })
        const result = yield* virtual(read(answer([a.source])))
        expect(result.end).toEqual(Either.left(
          new Retry.DeadlineExceeded({ deadline: Duration.seconds(5), attempts: 2, waitingFor: "the first chunk" })
        ))
        expect(result.at).toBe(5000) // attempt 1 timed out at 3 s, attempt 2 began at 3.1 s
        expect(a.log.closed).toBe(2)
      }))

    it.effect("issue 18.2: a break past the deadline is not continued, and a continuation never outlives the deadline", () =>
      Effect.gen(function*() {
        const a = scripted("a", [
          { chunks: [[1000, "first"]], end: overloaded },
          { chunks: trickle(1500, 100), end: "final" }
        ], true)
        const answer = StreamingAnswer.make({ continue: true, deadline: "5 seconds" })
        const result = yield* virtual(read(answer([a.source])))
        expect(result.seen).toEqual(["first@1000", ".@2500", ".@4000"])
        expect(result.end).toEqual(Either.left(new Retry.DeadlineExceeded({
          deadline: Duration.seconds(5),
          attempts: 2,
          waitingFor: "the rest of the answer (7 characters delivered)",
          lastError: { _tag: "Overloaded", message: overloaded.message }
        })))
        expect(result.at).toBe(5000)
      }))

    it.effect("issue 18.2: a reader that comes back after the deadline ends the answer at its next pull", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: trickle(100, 100), end: "final" }])
        const slowReader = StreamingAnswer.make({ deadline: "5 seconds" })([a.source]).pipe(Stream.tap(() => Effect.sleep("2 seconds")))
        const result = yield* virtual(read(slowReader))
        expect(result.seen).toEqual([".@2100", ".@4200", ".@6300"])
        expect(Either.isLeft(result.end) && result.end.left._tag).toBe("DeadlineExceeded")
        expect(result.at).toBe(6300)
        expect(a.log.closed).toBe(1)
      }))
  })

  it.effect("the idle timeout times the model, not the reader: a reader slower than betweenChunks never trips it", () =>
    Effect.gen(function*() {
      const a = scripted("a", [{ chunks: Array.from({ length: 5 }, () => [100, "."] as const), end: "final" }])
      const slowReader = StreamingAnswer.make({ betweenChunks: "500 millis" })([a.source]).pipe(
        Stream.tap(() => Effect.sleep("2 seconds"))
      )
      const result = yield* virtual(read(slowReader))
      // each chunk: 100 ms of model time after the reader asked, then 2 s of reading
      expect(result.seen).toEqual(["@2100", "@4200", "@6300", "@8400", "@10500"].map((t) => "." + t))
      expect(Either.isRight(result.end)).toBe(true)
    }))

  it.effect("pitfall: a stream that ends without its final chunk is not a success; IncompleteStream carries the partial text", () =>
    Effect.gen(function*() {
      const a = scripted("a", [{ chunks: [[10, "Half"], [10, " an"]], end: "none" }])
      const result = yield* virtual(read(StreamingAnswer.make()([a.source])))
      expect(result.seen).toEqual(["Half@10", " an@20"])
      expect(result.end).toEqual(
        Either.left(new AiModel.IncompleteStream({ model: "a", partial: "Half an", reason: "the stream ended without its final chunk" }))
      )
    }))

  describe("retry and fallback: before the first chunk only", () => {
    it.effect("a failed start falls back to the next source, and onStarted says which source answered and why the others did not", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ startError: overloaded, chunks: [], end: "final" }])
        const b = scripted("b", [{ chunks: [[10, "Backup"]], end: "final" }])
        const started: Array<StreamingAnswer.StartedInfo<unknown>> = []
        const answer = StreamingAnswer.make({ onStarted: (info) => Effect.sync(() => void started.push(info)) })
        const result = yield* virtual(read(answer([a.source, b.source])))
        expect(result.seen).toEqual(["Backup@10"])
        expect(started).toEqual([{ source: "b", index: 1, failures: [{ tier: "a", error: overloaded }], deliveredChars: 0 }])
      }))

    it.effect("a hedge as the policy: a slow start gets a second copy, the first chunk wins, the loser's stream is closed", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: [[1000, "slow"]], end: "final" }, { chunks: [[100, "fast"]], end: "final" }])
        const hedge = yield* Hedge.make({ delay: "200 millis" })
        const result = yield* virtual(read(StreamingAnswer.make({ policy: (start) => hedge.run(start) })([a.source])))
        // the copy started at 200 ms delivers at 300 ms; the first attempt is interrupted then
        expect(result.seen).toEqual(["fast@300"])
        expect([a.log.calls.length, a.log.closed]).toEqual([2, 2])
      }))

    it.effect("after the first chunk, nothing is retried or falls back (continue off): the error that broke the stream ends it", () =>
      Effect.gen(function*() {
        const broken = new AiModel.Unavailable({ model: "a", reason: "reset" })
        const a = scripted("a", [{ chunks: [[10, "Par"], [10, "tial"]], end: broken }])
        const b = scripted("b", [{ chunks: [[10, "Backup"]], end: "final" }])
        const answer = StreamingAnswer.make({ policy: (start) => noRetryWait.apply(start) })
        const result = yield* virtual(read(answer([a.source, b.source])))
        expect(result.seen).toEqual(["Par@10", "tial@20"])
        expect(result.end).toEqual(Either.left(broken))
        expect([a.log.calls.length, b.log.calls.length]).toEqual([1, 0])
      }))

    it.effect("every source failing to start is AllTiersFailed with each one's error", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ startError: overloaded, chunks: [], end: "final" }])
        const b = scripted("b", [{ chunks: [], end: "none" }])
        const result = yield* virtual(read(StreamingAnswer.make()([a.source, b.source])))
        const error = Either.isLeft(result.end) ? result.end.left : undefined
        expect(error?._tag).toBe("AllTiersFailed")
        expect(error?._tag === "AllTiersFailed" && error.failures.map((f) => [f.tier, (f.error as { _tag: string })._tag]))
          .toEqual([["a", "Overloaded"], ["b", "IncompleteStream"]])
      }))
  })

  describe("continue", () => {
    it.effect("after a mid-stream failure the source continues from the text delivered: one answer, no repeated words", () =>
      Effect.gen(function*() {
        const a = scripted("a", [
          { chunks: [[10, "The"], [10, " quick"]], end: new AiModel.Unavailable({ model: "a", reason: "reset" }) },
          { chunks: [[100, " brown"], [10, " fox."]], end: "final" }
        ], true)
        const continued: Array<StreamingAnswer.ContinuedInfo<unknown>> = []
        const answer = StreamingAnswer.make({
          continue: true,
          onContinued: (info) => Effect.sync(() => void continued.push(info))
        })
        const result = yield* virtual(read(answer([a.source])))
        expect(result.seen).toEqual(["The@10", " quick@20", " brown@120", " fox.@130"])
        expect(Either.isRight(result.end)).toBe(true)
        expect(a.log.calls).toEqual(["", "The quick"])
        expect(continued.map((info) => [info.source, info.deliveredChars, (info.error as { _tag: string })._tag]))
          .toEqual([["a", 9, "Unavailable"]])
      }))

    let breaks = 0
    it.effect.prop(
      "with the embedded model breaking mid-stream (errors or early ends), the joined text equals the uninterrupted answer",
      { seed: fc.integer({ min: 0, max: 10_000 }), kind: fc.constantFrom("error" as const, "end" as const) },
      ({ kind, seed }) =>
        Effect.gen(function*() {
          const prompt = "Streams deliver tokens as they are produced. A broken stream loses the rest of the answer. " +
            "Continuation asks the model to pick up where the stream broke. The reader sees one answer."
          const request = new AiModel.CompletionRequest({ prompt, maxTokens: 200 })
          const whole = yield* Effect.flatMap(EmbeddedModel.make({ seed }), (model) => virtual(model.generate(request)))
          const flaky = yield* EmbeddedModel.make({
            seed,
            timeToFirstToken: "20 millis",
            perToken: 0,
            midStreamFailureRate: 0.5,
            midStreamFailure: kind
          })
          let continued = 0
          const answer = StreamingAnswer.make({
            continue: { maxContinuations: 50 },
            onContinued: () => Effect.sync(() => void continued++)
          })
          const source = StreamingAnswer.fromModel(flaky, request)
          let calls = 0
          const counted = { ...source, stream: (delivered: string) => Stream.suspend(() => (calls++, source.stream(delivered))) }
          const result = yield* virtual(read(answer([counted])))
          expect(result.end).toEqual(Either.right(undefined))
          expect(text(result.seen)).toBe(whole.text)
          // every call after the first continued a break
          expect(continued).toBe(calls - 1)
          breaks += continued
        }),
      { fastCheck: { numRuns: 25 } }
    )

    it("(the property above did see streams break and continue)", () => {
      expect(breaks).toBeGreaterThan(5)
    })

    it.effect("a source that cannot continue is never asked to (it would repeat itself): the stream fails cleanly with the break", () =>
      Effect.gen(function*() {
        const broken = new AiModel.Unavailable({ model: "a", reason: "reset" })
        const a = scripted("a", [{ chunks: [[10, "Once"]], end: broken }, { chunks: [[10, "Once again"]], end: "final" }], false)
        const result = yield* virtual(read(StreamingAnswer.make({ continue: true })([a.source])))
        expect(result.seen).toEqual(["Once@10"])
        expect(result.end).toEqual(Either.left(broken))
        expect(a.log.calls).toEqual([""])
      }))

    it.effect("the continuation goes to the next source that can continue when this one cannot", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: [[10, "Split"]], end: "none" }], false)
        const b = scripted("b", [{ chunks: [[10, " answer."]], end: "final" }], true)
        const result = yield* virtual(read(StreamingAnswer.make({ continue: true })([a.source, b.source])))
        expect(text(result.seen)).toBe("Split answer.")
        expect(b.log.calls).toEqual(["Split"])
      }))

    it.effect("a continuation's start is retried by the policy and falls back like any start", () =>
      Effect.gen(function*() {
        const a = scripted("a", [
          { chunks: [[10, "Go"]], end: new AiModel.Unavailable({ model: "a", reason: "reset" }) },
          { startError: overloaded, chunks: [], end: "final" }
        ], true)
        const b = scripted("b", [{ chunks: [[10, " on."]], end: "final" }], true)
        const answer = StreamingAnswer.make({ continue: true, policy: (start) => noRetryWait.apply(start) })
        const result = yield* virtual(read(answer([a.source, b.source])))
        expect(text(result.seen)).toBe("Go on.")
        // a: the answer, then 3 attempts to continue (policy: 3 attempts); then b continues
        expect(a.log.calls).toEqual(["", "Go", "Go", "Go"])
        expect(b.log.calls).toEqual(["Go"])
      }))

    it.effect("maxContinuations bounds continuing: a source that breaks every time ends with its last break", () =>
      Effect.gen(function*() {
        const broken = new AiModel.Unavailable({ model: "a", reason: "reset" })
        const a = scripted("a", [{ chunks: [[10, "x"]], end: broken }], true)
        const result = yield* virtual(read(StreamingAnswer.make({ continue: { maxContinuations: 2 } })([a.source])))
        expect(text(result.seen)).toBe("xxx")
        expect(result.end).toEqual(Either.left(broken))
        expect(a.log.calls).toEqual(["", "x", "xx"])
      }))
  })

  describe("resources and backpressure", () => {
    it.effect("a slow reader slows the model: the source is never more than one chunk ahead of the reader", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: Array.from({ length: 20 }, () => [1, "."] as const), end: "final" }])
        let consumed = 0
        let maxAhead = 0
        const reader = StreamingAnswer.make()([a.source]).pipe(
          Stream.runForEach(() =>
            Effect.zipRight(
              Effect.sleep("1 second"),
              Effect.sync(() => {
                consumed++
                maxAhead = Math.max(maxAhead, a.log.produced - consumed)
              })
            )
          )
        )
        const fiber = yield* Effect.fork(reader)
        yield* TestClock.adjust("5500 millis")
        // after 5.5 s the reader has taken 5 chunks; the model has made at most one more
        expect(consumed).toBe(5)
        expect(a.log.produced <= 6).toBe(true)
        yield* TestClock.adjust("1 minute")
        yield* Fiber.join(fiber)
        expect([consumed, maxAhead <= 1]).toEqual([20, true])
      }))

    it.effect("a reader that stops early, or is interrupted, closes the model's stream", () =>
      Effect.gen(function*() {
        const a = scripted("a", [{ chunks: Array.from({ length: 10 }, () => [10, "."] as const), end: "final" }])
        const answer = StreamingAnswer.make()
        const firstTwo = yield* virtual(read(Stream.take(answer([a.source]), 2)))
        expect(firstTwo.seen.length).toBe(2)
        expect(a.log.closed).toBe(1)
        const b = scripted("b", [{ chunks: [[10, "."]], end: "hang" }])
        const fiber = yield* Effect.fork(Stream.runDrain(answer([b.source])))
        yield* TestClock.adjust("1 second")
        expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
        expect(b.log.closed).toBe(1)
      }))

    it.effect("maxContinuations out of range is a defect", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(Effect.sync(() => StreamingAnswer.make({ continue: { maxContinuations: -1 } })))
        expect(Exit.isFailure(exit)).toBe(true)
      }))
  })

  /** A chunk `first × idle` after the start, then silence: the idle timeout fires idle after the chunk. */
  const idleAfterAChunk = (idle: number, first: number) =>
    Effect.gen(function*() {
      const stalls = scripted("a", [{ chunks: [[first * idle, "One"]], end: "hang" }])
      const answer = StreamingAnswer.make({ betweenChunks: Duration.millis(idle), firstChunk: "1 hour" })
      const stalled = yield* virtual(read(answer([stalls.source])))
      expect(stalled.end).toEqual(Either.left(new AiModel.ModelTimeout({ model: "a", timeout: Duration.millis(idle) })))
      const chunkAt = Number(stalled.seen[0]!.slice(stalled.seen[0]!.lastIndexOf("@") + 1))
      const idleFor = stalled.at - chunkAt
      expect(idleFor).toBeGreaterThanOrEqual(Duration.toMillis(Duration.millis(idle)) - 1e-6)
      expect(idleFor).toBeLessThanOrEqual(Duration.toMillis(Duration.millis(idle)) + 2e-6)
    }).pipe(noSpin(1000))

  it.effect.prop(
    "issue 17.1: a fractional idle timeout after a chunk at a fractional time fires at its moment (to the nanosecond), without spinning",
    { idle: fractional(1, 1000), first: fractional(0, 1) },
    ({ first, idle }) => idleAfterAChunk(idle, first),
    { fastCheck: { numRuns: 25 } }
  )

  it.effect("issue 17.1: the idle watchdog does not spin where it did (its last sleep rounded to zero nanoseconds)", () =>
    idleAfterAChunk(746.4081688970327, 0.6180339887498949))
})
