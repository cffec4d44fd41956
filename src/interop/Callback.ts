/**
 * Crossing between Effect and callback or Promise code, both ways, with cancellation and typed
 * errors.
 *
 * Into Effect:
 * - `fromNode` lifts a Node-style function `(...args, callback(error, value))`;
 * - `async` lifts any callback API, handing it a Node-style callback and an `AbortSignal`, and
 *   taking back an optional canceler;
 * - `fromPromise` lifts a Promise API that takes an `AbortSignal`.
 * Interrupting the Effect aborts the signal and calls the canceler, so the underlying work
 * stops. Whatever the API reports as an error goes through your `onError` mapping, so the Effect
 * fails with your typed error, never with `unknown`. A callback called a second time (a bug in
 * many callback APIs) is ignored, and reported (`onExtraCall`, by default a warning in Effect's
 * log and the {@link metrics} counter); it never crashes the program nor resumes anything twice.
 *
 * Out of Effect: `runner` captures the current runtime (its services, `Clock`, logger) and runs
 * effects for Promise callers (an `AbortSignal` interrupts the run; a failure rejects with the
 * typed error itself, not a wrapper) and for Node-style callback callers (`toNode`, which hands
 * back a function that interrupts the run).
 *
 * The seed's callback section showed callback hell (`validateData(data, (err, valid) => ...)`),
 * with no way to cancel and errors as `unknown`. `Effect.async` and `Effect.tryPromise` are the
 * building blocks; this module adds the Node-style conventions and the double-call guard.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import * as fs from "node:fs"
 * import { Callback } from "wiz-effect"
 *
 * class ReadFailed extends Schema.TaggedError<ReadFailed>()("ReadFailed", { path: Schema.String, reason: Schema.String }) {}
 *
 * const readFile = (path: string) =>
 *   Callback.async<string, ReadFailed>(
 *     (callback, signal) => fs.readFile(path, { encoding: "utf8", signal }, callback),
 *     { name: "fs.readFile", onError: (error) => new ReadFailed({ path, reason: String(error) }) }
 *   )
 *
 * const program = Effect.gen(function* () {
 *   const run = yield* Callback.runner()
 *   // hand an Effect to Promise code: aborting the signal interrupts it
 *   const text = await run.runPromise(readFile("prompt.txt"), { signal: AbortSignal.timeout(1000) })
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Effect, Exit, FiberId, Metric, Runtime } from "effect"

/**
 * The last argument of a Node-style function: called once, with an error, or with `null` (or
 * `undefined`) and the value.
 *
 * @since 0.1.0
 * @category models
 */
export type NodeCallback<A> = (error: unknown, value?: A) => void

/**
 * A callback called again after its first call, which was the one that counted.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExtraCall {
  /** The API, as named in the options. */
  readonly name: string
  /** Which call this is: 2 for the second, and so on. */
  readonly call: number
  readonly error: unknown
  readonly value: unknown
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<E> {
  /** Turns what the API reports as an error (or throws) into the Effect's typed error. */
  readonly onError: (error: unknown) => E
  /** The API's name, in reports. */
  readonly name?: string
  /** What to do with a callback called again; it is ignored either way. */
  readonly onExtraCall?: (extra: ExtraCall) => Effect.Effect<void>
}

/**
 * `name: "callback"`; `onExtraCall`: a warning in Effect's log (annotated with the API's name
 * and the call number) and one more on {@link metrics}' `extraCalls`, because a second call
 * means a bug in the API that someone should see, but not one that should stop the program.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  name: "callback",
  onExtraCall: (extra: ExtraCall): Effect.Effect<void> =>
    Effect.logWarning(`${extra.name}: callback called again (call ${extra.call}); ignored`).pipe(
      Effect.annotateLogs({ api: extra.name, call: extra.call }),
      Effect.zipRight(Metric.increment(Metric.tagged(metrics.extraCalls, "api", extra.name)))
    )
} as const

/**
 * Counters of this module, as Effect `Metric`s.
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  extraCalls: Metric.counter("wiz_callback_extra_calls_total", {
    description: "callbacks called again after their first call (ignored)",
    incremental: true
  })
} as const

/**
 * An Effect from a callback API: `register` starts the work with a Node-style callback and an
 * `AbortSignal`, and may return a canceler. The first call of the callback decides the outcome;
 * later calls are reported and ignored; a `register` that throws fails the Effect through
 * `onError`. Interrupting the Effect aborts the signal, then calls the canceler.
 *
 * @since 0.1.0
 * @category constructors
 */
export const async = <A, E>(
  register: (callback: NodeCallback<A>, signal: AbortSignal) => void | (() => void),
  options: Options<E>
): Effect.Effect<A, E> =>
  Effect.flatMap(Effect.runtime<never>(), (runtime) =>
    Effect.async<A, E>((resume, signal) => {
      let calls = 0
      const callback: NodeCallback<A> = (error, value) => {
        calls++
        if (calls > 1) {
          const extra: ExtraCall = { name: options.name ?? defaults.name, call: calls, error, value }
          Runtime.runFork(runtime)((options.onExtraCall ?? defaults.onExtraCall)(extra))
          return
        }
        resume(
          error === null || error === undefined
            ? Effect.succeed(value as A)
            : Effect.suspend(() => Effect.fail(options.onError(error)))
        )
      }
      let cancel: void | (() => void) = undefined
      try {
        cancel = register(callback, signal)
      } catch (thrown) {
        callback(thrown)
      }
      return cancel === undefined ? undefined : Effect.sync(cancel)
    }))

/**
 * A Node-style function `(...args, callback)` as a function returning an Effect. Such a
 * function has no way to be cancelled, unless `cancel` is given: it receives what `f` returned
 * (a request, a child process) when the Effect is interrupted. Without it, interruption stops
 * the waiting, and the callback's late call is ignored.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromNode = <Args extends ReadonlyArray<unknown>, A, E, H = unknown>(
  f: (...args: [...Args, NodeCallback<A>]) => H,
  options: Options<E> & { readonly cancel?: (handle: H) => void }
): (...args: Args) => Effect.Effect<A, E> =>
(...args) =>
  async<A, E>((callback) => {
    const handle = f(...args, callback)
    const cancel = options.cancel
    return cancel === undefined ? undefined : () => cancel(handle)
  }, options)

/**
 * A Promise API taking an `AbortSignal` (its last argument) as a function returning an Effect:
 * interrupting the Effect aborts the signal; a rejection fails it through `onError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromPromise = <Args extends ReadonlyArray<unknown>, A, E>(
  f: (...args: [...Args, AbortSignal]) => PromiseLike<A>,
  options: Pick<Options<E>, "onError">
): (...args: Args) => Effect.Effect<A, E> =>
(...args) => Effect.tryPromise({ try: (signal) => f(...args, signal), catch: options.onError })

/**
 * Runs effects for callback and Promise code, in the runtime it was made in.
 *
 * @since 0.1.0
 * @category models
 */
export interface Runner<R> {
  /**
   * Runs `effect`. The promise resolves with its value, or rejects with its error: the typed
   * error itself, or the defect, or an `InterruptedException` (`Cause.squash`). Aborting
   * `signal` interrupts the run.
   */
  readonly runPromise: <A, E>(effect: Effect.Effect<A, E, R>, options?: { readonly signal?: AbortSignal }) => Promise<A>
  /**
   * Runs `effect` and calls `callback` once, Node-style: `(null, value)`, or `(error)` as for
   * `runPromise`. Returns a function that interrupts the run (the callback then gets the
   * interruption).
   */
  readonly runCallback: <A, E>(effect: Effect.Effect<A, E, R>, callback: NodeCallback<A>) => () => void
  /** A function returning an Effect as a Node-style function: `(...args, callback) => cancel`. */
  readonly toNode: <Args extends ReadonlyArray<unknown>, A, E>(
    f: (...args: Args) => Effect.Effect<A, E, R>
  ) => (...args: [...Args, NodeCallback<A>]) => () => void
}

const squash = <A, E>(exit: Exit.Exit<A, E>): unknown => Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined

/**
 * A {@link Runner} for the current runtime: what it runs sees the same services, `Clock`
 * (a `TestClock` under test), logger and fiber refs as the code that made it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const runner = <R = never>(): Effect.Effect<Runner<R>, never, R> =>
  Effect.map(Effect.runtime<R>(), (runtime) => {
    /** Runs `effect`, handing its `Exit` to `onExit`; returns the canceler. */
    const start = <A, E>(effect: Effect.Effect<A, E, R>, onExit: (exit: Exit.Exit<A, E>) => void): () => void => {
      const fiber = Runtime.runFork(runtime)(effect)
      fiber.addObserver(onExit)
      return () => fiber.unsafeInterruptAsFork(FiberId.none)
    }
    const runCallback = <A, E>(effect: Effect.Effect<A, E, R>, callback: NodeCallback<A>): () => void =>
      start(effect, (exit) => Exit.isSuccess(exit) ? callback(null, exit.value) : callback(squash(exit)))
    const run: Runner<R> = {
      runPromise: (effect, options) =>
        new Promise((resolve, reject) => {
          const signal = options?.signal
          const onAbort = () => cancel()
          const cancel = start(effect, (exit) => {
            signal?.removeEventListener("abort", onAbort)
            if (Exit.isSuccess(exit)) resolve(exit.value)
            else reject(squash(exit))
          })
          if (signal === undefined) return
          if (signal.aborted) cancel()
          else signal.addEventListener("abort", onAbort, { once: true })
        }),
      runCallback,
      toNode: <Args extends ReadonlyArray<unknown>, A, E>(f: (...args: Args) => Effect.Effect<A, E, R>) =>
      (...args: [...Args, NodeCallback<A>]) => {
        const callback = args[args.length - 1] as NodeCallback<A>
        // the arguments before the callback: TypeScript cannot type a tuple's slice
        const rest = args.slice(0, -1) as unknown as Args
        return runCallback(f(...rest), callback)
      }
    }
    return run
  })
