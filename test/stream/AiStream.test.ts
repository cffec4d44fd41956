import { describe, expect, it } from "@effect/vitest"
import { Chunk, Clock, Effect, Either, Exit, Fiber, Sink, Stream, TestClock } from "effect"
import { Readable, Writable } from "node:stream"
import * as AiStream from "../../src/stream/AiStream.js"

/** Each element with the virtual time (ms from the start of the run) it reached the end of the stream. */
const timed = <A, E>(stream: Stream.Stream<A, E>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const fiber = yield* Effect.fork(
      Stream.runCollect(Stream.mapEffect(stream, (a) => Effect.map(Clock.currentTimeMillis, (t) => `${a}@${t - start}`)))
    )
    yield* TestClock.adjust("1 hour")
    return Chunk.toReadonlyArray(yield* Fiber.join(fiber))
  })

/** An item that takes `ms` of virtual time to process. */
const work = (ms: number) => Effect.as(Effect.sleep(ms), ms)

describe("AiStream", () => {
  describe("transform (seed bug 6: AIProcessingStream processed one chunk at a time)", () => {
    it.effect("runs `concurrency` calls at once and keeps input order: 4 calls of 100–400 ms end together at 400 ms", () =>
      Effect.gen(function*() {
        const out = yield* timed(Stream.make(400, 300, 200, 100).pipe(AiStream.transform(work, { concurrency: 4 })))
        expect(out).toEqual(["400@400", "300@400", "200@400", "100@400"])
      }))

    it.effect("order: completion emits each result when it is ready", () =>
      Effect.gen(function*() {
        const out = yield* timed(
          Stream.make(400, 300, 200, 100).pipe(AiStream.transform(work, { concurrency: 4, order: "completion" }))
        )
        expect(out).toEqual(["100@100", "200@200", "300@300", "400@400"])
      }))

    it.effect("never more than `concurrency` calls in flight, however long the stream", () =>
      Effect.gen(function*() {
        let inFlight = 0
        let most = 0
        const call = (n: number) =>
          Effect.acquireUseRelease(
            Effect.sync(() => {
              inFlight++
              most = Math.max(most, inFlight)
            }),
            () => work(10 + (n % 7) * 10),
            () => Effect.sync(() => void inFlight--)
          )
        const out = yield* timed(Stream.range(1, 100).pipe(AiStream.transform(call, { concurrency: 3 })))
        expect([out.length, most]).toEqual([100, 3])
      }))

    it.effect("the first failure fails the stream and interrupts the calls in flight", () =>
      Effect.gen(function*() {
        let interrupted = 0
        const call = (n: number) =>
          n === 2
            ? Effect.zipRight(Effect.sleep(50), Effect.fail(`item ${n} failed`))
            : Effect.onInterrupt(work(1000), () => Effect.sync(() => void interrupted++))
        const fiber = yield* Effect.fork(Effect.either(Stream.runCollect(Stream.make(1, 2, 3, 4).pipe(AiStream.transform(call)))))
        yield* TestClock.adjust("50 millis")
        expect(yield* Fiber.join(fiber)).toEqual(Either.left("item 2 failed"))
        expect(interrupted).toBe(3)
      }))

    it("concurrency must be a positive integer", () => {
      expect(() => AiStream.transform(work, { concurrency: 0 })).toThrow(RangeError)
    })
  })

  describe("buffer", () => {
    it.effect("a full buffer suspends the producer: it runs at most `capacity` items ahead of a slow consumer", () =>
      Effect.gen(function*() {
        let produced = 0
        let consumed = 0
        const source = Stream.range(1, 100).pipe(Stream.tap(() => Effect.sync(() => void produced++)))
        const fiber = yield* Effect.fork(
          source.pipe(
            AiStream.buffer(4),
            Stream.runForEach(() => Effect.zipRight(Effect.sleep("1 second"), Effect.sync(() => void consumed++)))
          )
        )
        const ahead: Array<number> = []
        for (let second = 0; second < 10; second++) {
          yield* TestClock.adjust("1 second")
          ahead.push(produced - consumed)
        }
        // exactly: the item being consumed, `capacity` (4) queued, and one the producer holds while it waits
        expect(ahead).toEqual(Array.from({ length: 10 }, () => 1 + 4 + 1))
        expect([produced, consumed]).toEqual([16, 10])
        yield* TestClock.adjust("2 minutes")
        yield* Fiber.join(fiber)
        expect([produced, consumed]).toEqual([100, 100])
      }))

    it("there is no unbounded buffer: a capacity must be a positive integer", () => {
      expect(() => AiStream.buffer(0)).toThrow(RangeError)
      expect(() => AiStream.buffer(Infinity)).toThrow(RangeError)
    })
  })

  describe("shape (seed bug 6: RateLimitedStream had no burst and measured from the last chunk only)", () => {
    it.effect("a rate is a token bucket: units per period, steady after the first units", () =>
      Effect.gen(function*() {
        const out = yield* timed(Stream.range(1, 6).pipe(AiStream.shape({ rate: { units: 2, per: "1 second" } })))
        expect(out).toEqual(["1@0", "2@0", "3@500", "4@1000", "5@1500", "6@2000"])
      }))

    it.effect("after an idle spell the bucket has refilled: a burst goes at once, then the rate again", () =>
      Effect.gen(function*() {
        // six items, a 10 s pause, six more
        const items = Stream.concat(
          Stream.range(1, 6),
          Stream.fromEffect(Effect.as(Effect.sleep("10 seconds"), 0)).pipe(Stream.drain, Stream.concat(Stream.range(7, 12)))
        )
        const out = yield* timed(items.pipe(AiStream.shape({ rate: { units: 2, per: "1 second", burst: 2 } })))
        expect(out.slice(6)).toEqual(["7@12000", "8@12000", "9@12000", "10@12000", "11@12500", "12@13000"])
      }))

    it.effect("cost: an item costing more waits for more tokens", () =>
      Effect.gen(function*() {
        const out = yield* timed(
          Stream.make(1, 3, 1).pipe(AiStream.shape({ rate: { units: 2, per: "1 second", cost: (n) => n } }))
        )
        // 2 tokens: the 1 goes; the 3 takes the last token and 1 s of debt (1.0 s); the next 1 waits the debt off
        expect(out).toEqual(["1@0", "3@1000", "1@1500"])
      }))

    it.effect("admit: each item waits for an effect of yours (a token budget), in order; its failure fails the stream", () =>
      Effect.gen(function*() {
        const asked: Array<number> = []
        const admit = (tokens: number) =>
          tokens > 500
            ? Effect.fail("over budget")
            : Effect.zipRight(Effect.sync(() => void asked.push(tokens)), Effect.sleep(tokens))
        const out = yield* timed(Stream.make(100, 300, 50).pipe(AiStream.shape({ admit })))
        expect(out).toEqual(["100@100", "300@400", "50@450"])
        expect(asked).toEqual([100, 300, 50])
        const failed = yield* Effect.either(Stream.runCollect(Stream.make(100, 900).pipe(AiStream.shape({ admit }))).pipe(
          Effect.fork,
          Effect.tap(() => TestClock.adjust("1 second")),
          Effect.flatMap(Fiber.join)
        ))
        expect(failed).toEqual(Either.left("over budget"))
      }))

    it("a rate must have units > 0, burst >= 0 and a positive period", () => {
      expect(() => AiStream.shape({ rate: { units: 0, per: "1 second" } })).toThrow(RangeError)
      expect(() => AiStream.shape({ rate: { units: 1, per: "0 millis" } })).toThrow(RangeError)
      expect(() => AiStream.shape({ rate: { units: 1, per: "1 second", burst: -1 } })).toThrow(RangeError)
    })
  })

  describe("pipeline", () => {
    it.effect("the first error fails it, and every finalizer runs: source, each item's resource, sink", () =>
      Effect.gen(function*() {
        const released: Array<string> = []
        const source = Stream.acquireRelease(
          Effect.succeed(Stream.range(1, 10)),
          () => Effect.sync(() => void released.push("source"))
        ).pipe(Stream.flatten())
        const call = (n: number) =>
          Effect.scoped(Effect.gen(function*() {
            yield* Effect.addFinalizer(() => Effect.sync(() => void released.push(`item ${n}`)))
            yield* Effect.sleep(n * 10)
            if (n === 3) return yield* Effect.fail("item 3 failed")
            return n
          }))
        const sink = Sink.drain.pipe(Sink.ensuring(Effect.sync(() => void released.push("sink"))))
        const fiber = yield* Effect.fork(Effect.either(AiStream.pipeline(source, AiStream.transform(call), sink)))
        yield* TestClock.adjust("1 second")
        expect(yield* Fiber.join(fiber)).toEqual(Either.left("item 3 failed"))
        // 1 and 2 finished, 3 failed at 30 ms; 4, 5 and 6 (started as 1 and 2 ended) were interrupted
        expect(released.sort()).toEqual(["item 1", "item 2", "item 3", "item 4", "item 5", "item 6", "sink", "source"])
      }))

    it.effect("interrupting a pipeline runs every finalizer", () =>
      Effect.gen(function*() {
        const released: Array<string> = []
        const source = Stream.range(1, 1000).pipe(Stream.ensuring(Effect.sync(() => void released.push("source"))))
        const call = (n: number) =>
          Effect.onInterrupt(work(100), () => Effect.sync(() => void released.push(`item ${n}`)))
        const sink = Sink.forEach(() => Effect.void).pipe(Sink.ensuring(Effect.sync(() => void released.push("sink"))))
        const fiber = yield* Effect.fork(AiStream.pipeline(source, AiStream.transform(call, { concurrency: 2 }), sink))
        yield* TestClock.adjust("250 millis")
        expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)
        expect(released.sort()).toEqual(["item 5", "item 6", "sink", "source"])
      }))

    it.effect("with two stages, the sink's result is the pipeline's result", () =>
      Effect.gen(function*() {
        const total = yield* AiStream.pipeline(
          Stream.range(1, 5),
          Stream.map((n: number) => n * 2),
          AiStream.transform((n: number) => Effect.succeed(n + 1)),
          Sink.sum
        )
        expect(total).toBe(35)
      }))
  })

  describe("Node streams and AsyncIterable", () => {
    it.live("seed: `for await` over the results works; a break stops the stream and runs its finalizer", () =>
      Effect.gen(function*() {
        let released = false
        const stream = Stream.range(1, 1_000_000).pipe(
          AiStream.transform((n) => Effect.succeed(n * n), { concurrency: 2 }),
          Stream.ensuring(Effect.sync(() => void (released = true)))
        )
        const iterable = yield* AiStream.toAsyncIterable(stream)
        const seen = yield* Effect.promise(async () => {
          const out: Array<number> = []
          for await (const square of iterable) {
            out.push(square)
            if (out.length === 5) break
          }
          return out
        })
        expect(seen).toEqual([1, 4, 9, 16, 25])
        expect(released).toBe(true)
      }))

    it.live("fromAsyncIterable reads an async generator; a throw in it fails the stream with a NodeStreamError", () =>
      Effect.gen(function*() {
        async function* prompts() {
          yield "a"
          yield "b"
          throw new Error("source broke")
        }
        const result = yield* Effect.either(Stream.runCollect(AiStream.fromAsyncIterable(prompts())))
        expect(result).toEqual(Either.left(new AiStream.NodeStreamError({ operation: "read", reason: "source broke" })))
      }))

    it.live("Readable in, Writable out, through a transform: the seed's pipeline(input, AIProcessingStream, output)", () =>
      Effect.gen(function*() {
        const written: Array<string> = []
        const output = new Writable({
          objectMode: true,
          highWaterMark: 2,
          write(chunk: string, _encoding, callback) {
            written.push(chunk)
            setImmediate(callback)
          }
        })
        yield* AiStream.pipeline(
          AiStream.fromReadable<string>(() => Readable.from(["alpha", "beta", "gamma", "delta"])),
          AiStream.transform((s: string) => Effect.succeed(s.toUpperCase()), { concurrency: 2 }),
          AiStream.toWritable<string>(() => output)
        )
        expect(written).toEqual(["ALPHA", "BETA", "GAMMA", "DELTA"])
        expect(output.writableFinished).toBe(true)
      }))

    it.live("a failing pipeline destroys the Writable it wrote to, and a Readable's error is typed", () =>
      Effect.gen(function*() {
        const output = new Writable({ objectMode: true, write: (_chunk, _encoding, callback) => callback() })
        const failed = yield* Effect.either(AiStream.pipeline(
          Stream.make(1, 2, 3),
          AiStream.transform((n: number) => n === 2 ? Effect.fail("bad item") : Effect.succeed(n)),
          AiStream.toWritable<number>(() => output)
        ))
        expect(failed).toEqual(Either.left("bad item"))
        expect(output.destroyed).toBe(true)
        const broken = new Readable({
          objectMode: true,
          read() {
            this.destroy(new Error("disk gone"))
          }
        })
        const read = yield* Effect.either(Stream.runCollect(AiStream.fromReadable(() => broken)))
        expect(read).toEqual(Either.left(new AiStream.NodeStreamError({ operation: "read", reason: "disk gone" })))
      }))

    it.live("toReadable: the stream as an object-mode Readable; destroy() interrupts it", () =>
      Effect.gen(function*() {
        const readable = yield* AiStream.toReadable(Stream.make({ id: 1 }, { id: 2 }, { id: 3 }))
        const items = yield* Effect.promise(() => readable.toArray())
        expect(items).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }])
        let released = false
        const endless = yield* AiStream.toReadable(
          Stream.repeatEffect(Effect.succeed("x")).pipe(Stream.ensuring(Effect.sync(() => void (released = true))))
        )
        yield* Effect.promise(() => new Promise<void>((resolve) => endless.once("data", () => resolve())))
        endless.destroy()
        yield* Effect.promise(() => new Promise<void>((resolve) => endless.once("close", () => resolve())))
        yield* Effect.sleep("20 millis")
        expect(released).toBe(true)
      }))
  })
})
