/**
 * Timeouts for model calls, failing with the typed {@link AiModel.ModelTimeout}:
 * - `attempt`: one call must answer within a duration;
 * - `firstChunk`: a stream must start within a duration (time to first token);
 * - `betweenChunks`: a stream must never stall longer than a duration.
 *
 * A timed-out attempt is interrupted, and `attempt` returns only once it has really stopped,
 * its finalizers included (Effect's `timeoutFail` awaits the interrupted fiber). Put the
 * timeout inside the permit, `bulkhead.withPermit(Timeout.attempt(options)(call))`, and the
 * permit is held until the call has ended, so the number of calls on the wire never exceeds
 * the limit. opossum and p-queue free the slot when the timer fires while the call still runs,
 * and overshoot their limit. Each call has its own timer: one timing out touches no other
 * call (opossum's timeout can abort every in-flight call that shares its signal).
 *
 * Time is read only through Effect's `Clock`, so timeouts are exact under `TestClock`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { AiModel, Bulkhead, Timeout } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const model = yield* AiModel.AiModel
 *   const bulkhead = yield* Bulkhead.make({ permits: 8 })
 *   const request = new AiModel.CompletionRequest({ prompt: "Summarise: ...", maxTokens: 64 })
 *   const completion = yield* model.generate(request).pipe(
 *     Timeout.attempt({ duration: "30 seconds", model: model.name }),
 *     bulkhead.withPermit
 *   )
 *   const chunks = model.stream(request).pipe(
 *     Timeout.firstChunk({ duration: "10 seconds", model: model.name }),
 *     Timeout.betweenChunks({ duration: "5 seconds", model: model.name })
 *   )
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Duration, Effect, Option, Stream } from "effect"
import { ModelTimeout } from "../model/AiModel.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long to wait. `Duration.infinity` means no timeout. */
  readonly duration: Duration.DurationInput
  /** The model called, reported in the {@link ModelTimeout}. */
  readonly model: string
}

/**
 * Fails with `ModelTimeout` when `self` has not ended within `duration`, after interrupting it
 * and waiting for it to stop. A result (success or failure) before the deadline is returned
 * unchanged. With an infinite duration, `self` is returned as it is.
 *
 * @since 0.1.0
 * @category combinators
 */
export const attempt = (
  options: Options
): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | ModelTimeout, R> => {
  const duration = Duration.decode(options.duration)
  if (!Duration.isFinite(duration)) return (self) => self
  const onTimeout = () => new ModelTimeout({ model: options.model, timeout: duration })
  return (self) => Effect.timeoutFail(self, { duration, onTimeout })
}

/**
 * Fails the stream with `ModelTimeout` when its first chunk has not arrived within
 * `duration`; later chunks may take as long as they like. Chunks are counted as the stream's
 * pulls, like `Stream.timeoutFail` does.
 *
 * @since 0.1.0
 * @category combinators
 */
export const firstChunk = (
  options: Options
): <A, E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E | ModelTimeout, R> => {
  const duration = Duration.decode(options.duration)
  if (!Duration.isFinite(duration)) return (self) => self
  const onTimeout = () => Option.some(new ModelTimeout({ model: options.model, timeout: duration }))
  return <A, E, R>(self: Stream.Stream<A, E, R>) =>
    Stream.fromPull(Effect.map(Stream.toPull(self), (pull) => {
      let first = true
      return Effect.suspend(() => {
        if (!first) return pull
        first = false
        return Effect.timeoutFail<Option.Option<E | ModelTimeout>>({ duration, onTimeout })(pull)
      })
    }))
}

/**
 * Fails the stream with `ModelTimeout` when it goes `duration` without a chunk: before the
 * first one, or between two. A stream that keeps producing is never cut, however long it runs.
 * This is `Stream.timeoutFail`, which times each pull of the stream.
 *
 * @since 0.1.0
 * @category combinators
 */
export const betweenChunks = (
  options: Options
): <A, E, R>(self: Stream.Stream<A, E, R>) => Stream.Stream<A, E | ModelTimeout, R> => {
  const duration = Duration.decode(options.duration)
  if (!Duration.isFinite(duration)) return (self) => self
  return Stream.timeoutFail(() => new ModelTimeout({ model: options.model, timeout: duration }), duration)
}
