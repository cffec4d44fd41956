/**
 * Streams of AI work: an effectful transform with bounded concurrency (input order kept, or
 * not), shaping by a rate or by any admission effect (a token budget), bounded buffers that
 * suspend their producer, interop with Node streams and `AsyncIterable` in both directions, and
 * a `pipeline` that fails with the first error and releases everything on failure or
 * interruption. All of it is Effect's `Stream`, named for the job and with its bounds made
 * explicit: nothing here has an unbounded queue.
 *
 * Fixes the seed's `AIProcessingStream`, `RateLimitedStream` and `pipeline` (seed bug 6):
 *
 * - `AIProcessingStream._transform` awaited one chunk at a time: a model call of 1 s made a
 *   stream of 100 items take 100 s. {@link transform} runs `concurrency` calls at once
 *   (`Stream.mapEffect`), keeping input order by default; at most `concurrency` results wait
 *   for a slow earlier one, and the producer is suspended meanwhile.
 * - `RateLimitedStream` slept `minInterval` from the *last* chunk: no burst after an idle spell,
 *   and its own processing time stretched every interval. {@link shape} with a `rate` is a token
 *   bucket (`Stream.throttle`'s `shape` strategy): `units` per `per`, measured over time, with
 *   `burst` extra after an idle spell. With `admit` instead, each item waits for an effect of
 *   yours — a token budget's reservation — before it goes on.
 * - Node's `pipeline` propagates an error, but the seed's transform swallowed a rejected
 *   `model.process` into `callback(error)` only for that chunk's promise, and an async
 *   `_transform` that throws after `callback` is called crashes the process. {@link pipeline}
 *   is `Stream.run`: the first error fails it, in-flight work is interrupted, and every
 *   finalizer (the source, each transform's resources, the sink, Node streams it opened) runs.
 *
 * Time is read only through Effect's `Clock`, so rates are exact under `TestClock`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AiModel, AiStream } from "wiz-effect"
 *
 * const summaries = (prompts: Stream.Stream<string>) =>
 *   Effect.gen(function* () {
 *     const model = yield* AiModel.AiModel
 *     return prompts.pipe(
 *       AiStream.shape({ rate: { units: 10, per: "1 second", burst: 5 } }),
 *       AiStream.transform((prompt) => model.generate(new AiModel.CompletionRequest({ prompt, maxTokens: 64 })), {
 *         concurrency: 4
 *       }),
 *       AiStream.buffer(16)
 *     )
 *   })
 *
 * // the seed's `for await` works unchanged:
 * // for await (const completion of await Effect.runPromise(AiStream.toAsyncIterable(stream))) { ... }
 * ```
 *
 * @since 0.1.0
 */
import { Chunk, Duration, Effect, Exit, Schema, Sink, Stream } from "effect"
import type { LazyArg } from "effect/Function"
import { Readable } from "node:stream"
import type { Writable } from "node:stream"

// -----------------------------------------------------------------------------
// errors
// -----------------------------------------------------------------------------

/**
 * A Node stream failed: reading from a `Readable` or an `AsyncIterable`, or writing to a
 * `Writable`. `reason` is the error's message.
 *
 * @since 0.1.0
 * @category errors
 */
export class NodeStreamError extends Schema.TaggedError<NodeStreamError>()("NodeStreamError", {
  operation: Schema.Literal("read", "write"),
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.operation} failed: ${this.reason}`
  }
}

const nodeError = (operation: "read" | "write") => (error: unknown): NodeStreamError =>
  new NodeStreamError({ operation, reason: error instanceof Error ? error.message : String(error) })

// -----------------------------------------------------------------------------
// options
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface TransformOptions {
  /** How many items are transformed at once: a positive integer. */
  readonly concurrency?: number
  /**
   * `input`: results in input order (a result waits for the slower ones before it);
   * `completion`: each result as soon as it is ready.
   */
  readonly order?: "input" | "completion"
}

/**
 * A token bucket: `units` per `per`, and up to `burst` more after an idle spell. Each item
 * costs `cost(item)` units (1 by default).
 *
 * @since 0.1.0
 * @category models
 */
export interface Rate<in A> {
  readonly units: number
  readonly per: Duration.DurationInput
  readonly burst?: number
  readonly cost?: (item: A) => number
}

/**
 * How {@link shape} paces a stream: by a `rate`, or by an `admit` effect each item waits for
 * (a token budget's reservation, say), run in order, one item at a time.
 *
 * @since 0.1.0
 * @category models
 */
export type ShapeOptions<A, E, R> =
  | { readonly rate: Rate<A> }
  | { readonly admit: (item: A) => Effect.Effect<void, E, R> }

/**
 * `concurrency: 4`: a few calls in flight hide a model's latency without flooding it (raise it
 * to what the provider allows). `order: "input"`: results line up with their inputs, as the
 * seed's transform did. `burst: 0`: a rate is a rate unless a burst is asked for.
 * `highWaterMark: 16`: objects a `Readable` from {@link toReadable} reads ahead (Node's own
 * object-mode default).
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  concurrency: 4,
  order: "input",
  burst: 0,
  highWaterMark: 16
} as const

// -----------------------------------------------------------------------------
// transforming and shaping
// -----------------------------------------------------------------------------

const positiveInteger = (name: string, n: number): number => {
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`AiStream: ${name} must be a positive integer (got ${n})`)
  return n
}

/**
 * Runs `f` on every item, `concurrency` at a time, in input order unless `order: "completion"`.
 * At most `concurrency` items are in flight or waiting to be emitted; the producer is suspended
 * beyond that. The first failure fails the stream and interrupts the calls in flight.
 *
 * @since 0.1.0
 * @category combinators
 */
export const transform = <A, B, E2, R2>(
  f: (item: A) => Effect.Effect<B, E2, R2>,
  options: TransformOptions = {}
): <E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<B, E | E2, R | R2> => {
  const concurrency = positiveInteger("concurrency", options.concurrency ?? defaults.concurrency)
  const unordered = (options.order ?? defaults.order) === "completion"
  return (self) => Stream.mapEffect(self, f, { concurrency, unordered })
}

/**
 * A bounded buffer between a producer and a slower consumer: up to `capacity` items are
 * produced ahead, then the producer is suspended until the consumer takes one. There is no
 * unbounded variant.
 *
 * @since 0.1.0
 * @category combinators
 */
export const buffer = (capacity: number): <A, E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E, R> => {
  positiveInteger("capacity", capacity)
  return (self) => Stream.buffer(self, { capacity, strategy: "suspend" })
}

/**
 * Paces the stream. With `rate`, a token bucket over the `Clock`: it starts with `units` tokens,
 * refills `units` per `per` continuously, holds at most `units + burst`, and an item that costs
 * more than there is waits until the bucket has refilled (one item at a time; a chunk is split
 * into items). With `admit`, each item waits for `admit(item)` before it goes on, in order; a
 * failure of `admit` fails the stream.
 *
 * @since 0.1.0
 * @category combinators
 */
export const shape = <A, E2 = never, R2 = never>(
  options: ShapeOptions<A, E2, R2>
): <E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E | E2, R | R2> => {
  if ("admit" in options) {
    const admit = options.admit
    return (self) => Stream.mapEffect(self, (item) => Effect.as(admit(item), item))
  }
  const { per, units } = options.rate
  const burst = options.rate.burst ?? defaults.burst
  const cost = options.rate.cost
  if (!(units > 0 && Number.isFinite(units)) || !(burst >= 0 && Number.isFinite(burst))) {
    throw new RangeError(`AiStream: a rate needs units > 0 and burst >= 0 (got units ${units}, burst ${burst})`)
  }
  const duration = Duration.decode(per)
  if (!(Duration.isFinite(duration) && Duration.toMillis(duration) > 0)) {
    throw new RangeError(`AiStream: a rate needs a positive, finite per (got ${Duration.format(duration)})`)
  }
  const chunkCost = cost === undefined
    ? Chunk.size
    : (chunk: Chunk.Chunk<A>) => {
      let total = 0
      for (const item of chunk) total += cost(item)
      return total
    }
  return (self) =>
    Stream.throttle(Stream.rechunk(self, 1), { cost: chunkCost, units, duration, burst, strategy: "shape" })
}

// -----------------------------------------------------------------------------
// interop
// -----------------------------------------------------------------------------

/**
 * An `AsyncIterable` (an async generator, say) as a stream, pulled one item at a time; its
 * `return` is called when the stream ends early. A rejection fails the stream with
 * `onError(rejection)` (a {@link NodeStreamError} by default).
 *
 * @since 0.1.0
 * @category interop
 */
export const fromAsyncIterable: {
  <A>(iterable: AsyncIterable<A>): Stream.Stream<A, NodeStreamError>
  <A, E>(iterable: AsyncIterable<A>, onError: (error: unknown) => E): Stream.Stream<A, E>
} = <A, E>(iterable: AsyncIterable<A>, onError?: (error: unknown) => E): Stream.Stream<A, E | NodeStreamError> =>
  Stream.fromAsyncIterable<A, E | NodeStreamError>(iterable, onError ?? nodeError("read"))

/**
 * The stream as an `AsyncIterable`, so `for await` reads it: each `next()` pulls one item (the
 * stream never runs ahead of the loop), a `break` interrupts the stream and runs its
 * finalizers, and a failure rejects with the error. It runs with the context of the effect.
 *
 * @since 0.1.0
 * @category interop
 */
export const toAsyncIterable = <A, E, R>(stream: Stream.Stream<A, E, R>): Effect.Effect<AsyncIterable<A>, never, R> =>
  Stream.toAsyncIterableEffect(stream)

/**
 * A Node `Readable` (object mode or bytes) as a stream, read as the consumer pulls (Node's own
 * backpressure); it is destroyed when the stream ends, fails or is interrupted. An `'error'`
 * fails the stream with `onError(error)` (a {@link NodeStreamError} by default).
 *
 * @since 0.1.0
 * @category interop
 */
export const fromReadable: {
  <A = Uint8Array>(evaluate: LazyArg<Readable | NodeJS.ReadableStream>): Stream.Stream<A, NodeStreamError>
  <A, E>(evaluate: LazyArg<Readable | NodeJS.ReadableStream>, onError: (error: unknown) => E): Stream.Stream<A, E>
} = <A, E>(
  evaluate: LazyArg<Readable | NodeJS.ReadableStream>,
  onError?: (error: unknown) => E
): Stream.Stream<A, E | NodeStreamError> =>
  // A Readable is an AsyncIterable whose iterator destroys it when iteration stops early.
  Stream.suspend(() =>
    Stream.fromAsyncIterable<A, E | NodeStreamError>(evaluate() as AsyncIterable<A>, onError ?? nodeError("read"))
  )

/**
 * The stream as an object-mode Node `Readable`, for code that expects one (`.pipe`, Node's
 * `pipeline`). It pulls as Node asks (at most `highWaterMark` items ahead); `destroy()`
 * interrupts the stream; a failure is emitted as `'error'` with the error.
 *
 * @since 0.1.0
 * @category interop
 */
export const toReadable = <A, E, R>(
  stream: Stream.Stream<A, E, R>,
  options: { readonly highWaterMark?: number } = {}
): Effect.Effect<Readable, never, R> =>
  Effect.map(
    Stream.toAsyncIterableEffect(stream),
    (iterable) => Readable.from(iterable, { objectMode: true, highWaterMark: options.highWaterMark ?? defaults.highWaterMark })
  )

/**
 * A Node `Writable` (object mode or bytes) as a sink: each item is written, waiting for
 * `'drain'` when the writable says it is full; it is ended when the stream ends, and destroyed
 * when the stream fails or is interrupted. An `'error'` fails with `onError(error)` (a
 * {@link NodeStreamError} by default).
 *
 * @since 0.1.0
 * @category interop
 */
export const toWritable: {
  <A>(evaluate: LazyArg<Writable | NodeJS.WritableStream>): Sink.Sink<void, A, never, NodeStreamError>
  <A, E>(evaluate: LazyArg<Writable | NodeJS.WritableStream>, onError: (error: unknown) => E): Sink.Sink<void, A, never, E>
} = <A, E>(
  evaluate: LazyArg<Writable | NodeJS.WritableStream>,
  onError?: (error: unknown) => E
): Sink.Sink<void, A, never, E | NodeStreamError> =>
  Sink.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(evaluate),
        (writable, exit) =>
          Exit.isSuccess(exit) || !("destroy" in writable)
            ? Effect.void
            : Effect.sync(() => {
              writable.destroy()
            })
      ),
      (writable) => {
        const fail: (error: unknown) => E | NodeStreamError = onError ?? nodeError("write")
        const end = awaitWritable(writable, (done) => {
          writable.end(done)
        }, fail)
        return Sink.forEach((item: A) =>
          awaitWritable(writable, (done) => {
            if (writable.write(item as never)) done()
            else writable.once("drain", done)
          }, fail)
        ).pipe(Sink.zipRight(Sink.fromEffect(end)))
      }
    )
  )

/**
 * Start an operation on a writable and wait until it calls `done`, failing with `onError` on
 * an `'error'` meanwhile; the listeners are removed however it ends.
 */
const awaitWritable = <E>(
  writable: Writable | NodeJS.WritableStream,
  start: (done: () => void) => void,
  onError: (error: unknown) => E
): Effect.Effect<void, E> =>
  Effect.async<void, E>((resume) => {
    let settled = false
    const cleanup = () => {
      writable.off("error", failed)
      writable.off("drain", succeeded)
    }
    const succeeded = () => {
      if (settled) return
      settled = true
      cleanup()
      resume(Effect.void)
    }
    const failed = (error: unknown) => {
      if (settled) return
      settled = true
      cleanup()
      resume(Effect.fail(onError(error)))
    }
    writable.on("error", failed)
    start(succeeded)
    return Effect.sync(cleanup)
  })

// -----------------------------------------------------------------------------
// pipeline
// -----------------------------------------------------------------------------

/**
 * Runs `source` through the stages into `sink`: the seed's `pipeline(input, transform, output)`.
 * The first error from any part fails it (the rest is interrupted); interrupting it, or a
 * failure, runs every finalizer of every part; it succeeds with the sink's result.
 *
 * @since 0.1.0
 * @category running
 */
export const pipeline: {
  <A, E, R, Z, EZ, RZ>(source: Stream.Stream<A, E, R>, sink: Sink.Sink<Z, A, unknown, EZ, RZ>): Effect.Effect<Z, E | EZ, R | RZ>
  <A, E, R, B, E1, R1, Z, EZ, RZ>(
    source: Stream.Stream<A, E, R>,
    stage: (self: Stream.Stream<A, E, R>) => Stream.Stream<B, E1, R1>,
    sink: Sink.Sink<Z, B, unknown, EZ, RZ>
  ): Effect.Effect<Z, E1 | EZ, R1 | RZ>
  <A, E, R, B, E1, R1, C, E2, R2, Z, EZ, RZ>(
    source: Stream.Stream<A, E, R>,
    first: (self: Stream.Stream<A, E, R>) => Stream.Stream<B, E1, R1>,
    second: (self: Stream.Stream<B, E1, R1>) => Stream.Stream<C, E2, R2>,
    sink: Sink.Sink<Z, C, unknown, EZ, RZ>
  ): Effect.Effect<Z, E2 | EZ, R2 | RZ>
  <A, E, R, B, E1, R1, C, E2, R2, D, E3, R3, Z, EZ, RZ>(
    source: Stream.Stream<A, E, R>,
    first: (self: Stream.Stream<A, E, R>) => Stream.Stream<B, E1, R1>,
    second: (self: Stream.Stream<B, E1, R1>) => Stream.Stream<C, E2, R2>,
    third: (self: Stream.Stream<C, E2, R2>) => Stream.Stream<D, E3, R3>,
    sink: Sink.Sink<Z, D, unknown, EZ, RZ>
  ): Effect.Effect<Z, E3 | EZ, R3 | RZ>
} = (
  source: Stream.Stream<unknown, unknown, unknown>,
  ...rest: ReadonlyArray<unknown>
): Effect.Effect<unknown, unknown, unknown> => {
  const sink = rest[rest.length - 1] as Sink.Sink<unknown, unknown, unknown, unknown, unknown>
  const stages = rest.slice(0, -1) as ReadonlyArray<
    (self: Stream.Stream<unknown, unknown, unknown>) => Stream.Stream<unknown, unknown, unknown>
  >
  return Stream.run(stages.reduce((stream, stage) => stage(stream), source), sink)
}
