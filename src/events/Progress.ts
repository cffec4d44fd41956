/**
 * Where a batch run stands, as a service on a `SubscriptionRef`: the total (or unknown, for a
 * stream), tasks succeeded, failed, invalid and skipped (answered by an earlier run), retries,
 * tasks in flight (and, reported by the flow control, the model calls on the wire among them),
 * and the rate and time left derived from the `Clock` — with `changes` as a
 * `Stream` of snapshots. A terminal {@link renderer} on `@effect/platform`'s `Terminal` draws it:
 * one line redrawn at most ten times a second on a TTY, a plain line every few seconds
 * elsewhere, and never interleaved with other output written through {@link Renderer.around}.
 *
 * Fixes the seed's `processWithProgress` (seed bug 13): it ran the tasks one after another and
 * reported a bare percentage. Here the counts come from the work however concurrent it is
 * (`track`, or `record` fed from the `EventBus`), and a snapshot says how many are done, how
 * fast, and how long is left:
 *
 * - **rate** (`perSecond`): tasks this run *finished* (succeeded or failed) per second since the
 *   progress was made. Skipped and invalid lines are done but not counted in the rate, so a
 *   resumed run that skips 9,000 lines in its first second does not claim 9,000 tasks a second
 *   (the ETA-on-resume bug of the first `wiz run`).
 * - **ETA** (`etaMillis`): the longer of two estimates; none while the total or the rate is
 *   unknown; zero once everything is done.
 *   1. What is left (`total - done`, less the inputs not reached yet that an earlier run already
 *      answered: `setAnsweredAhead`) at that rate. A total may be an estimate (`setTotal(n, {
 *      estimated: true })`, shown `~n`: a file's lines guessed from the bytes read so far).
 *   2. What the tasks in flight still need. The rate says nothing about the last few tasks,
 *      which may be waiting out a 30 s timeout while the rate promises "1s" (issue 17.7). So
 *      `track` and `record` keep when each task in flight started, and how long the finished
 *      ones took (a histogram, buckets 10% apart, constant memory); a task that has run `e` is
 *      expected to need the median of `d - e` over the finished tasks that took `d > e`, and
 *      when no finished task took that long, `e` again (as long again: an ETA that grows while
 *      it waits rather than one that says it is about to end). The most any task in flight is
 *      expected to need is the least the ETA can be. Tasks counted with `started` alone (no
 *      task id) are not in it.
 * - **circuits**: `record` also follows the breakers' transitions, so a snapshot lists each
 *   circuit that is not closed, and when an open one will let a probe through.
 *
 * Time is read only through `Clock`, so rate, ETA and redraws are exact under `TestClock`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { AgentService, EventBus, Progress } from "wiz-effect"
 *
 * const program = Effect.gen(function* () {
 *   const progress = yield* Progress.Progress
 *   const bus = yield* EventBus.EventBus
 *   yield* progress.setTotal(300)
 *   // count from the agent's events
 *   yield* bus.on(["TaskStarted", "TaskFinished", "RetryScheduled"], progress.record, { strategy: "suspend" })
 *   const screen = yield* Progress.renderer()            // draws on the Terminal until the scope closes
 *   yield* screen.log("resumed from results.jsonl")      // written above the line, never through it
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import * as Terminal from "@effect/platform/Terminal"
import { Cause, Clock, Context, Duration, Effect, Equal, Exit, Fiber, Layer, Option, Schedule, Stream, SubscriptionRef } from "effect"
import type { PlatformError } from "@effect/platform/Error"
import type { Scope } from "effect"
import { make as makeBulkhead } from "../concurrency/Bulkhead.js"
import * as AgentEvent from "./AgentEvent.js"

// -----------------------------------------------------------------------------
// models
// -----------------------------------------------------------------------------

/**
 * The counters.
 *
 * @since 0.1.0
 * @category models
 */
export interface Counts {
  /** Inputs in the run; none when unknown (a stream, stdin). */
  readonly total: Option.Option<number>
  readonly succeeded: number
  readonly failed: number
  /** Inputs that were not tasks (done, but never run). */
  readonly invalid: number
  /** Inputs an earlier run answered (done, but not run now: not in the rate). */
  readonly skipped: number
  /** Retries scheduled. */
  readonly retries: number
  /** Tasks started and not finished. */
  readonly inFlight: number
  /** The total is an estimate (shown `~N`); false when absent. */
  readonly estimated?: boolean
  /**
   * Inputs not reached yet that an earlier run already answered: they will be skipped, so they
   * are no work left (the ETA leaves them out). Each `skipped` input counts one off. 0 when absent.
   */
  readonly answeredAhead?: number
  /** Circuits that are not closed, by breaker name; none when absent. */
  readonly circuits?: ReadonlyArray<Circuit>
  /** The flow control as last reported ({@link Progress.Service.setFlow}); none when absent. */
  readonly flow?: Flow
  /** Fed outcomes only ({@link Options.outcomesOnly}): `retries` and `inFlight` are not known. False when absent. */
  readonly outcomesOnly?: boolean
}

/**
 * What the flow control is doing, as the line shows it: the calls on the wire, an adaptive
 * concurrency limit, and how much of a token budget is left. Reported by whoever knows (`wiz run` polls
 * `AgentService.flow`); each part is shown only when present.
 *
 * @since 0.1.0
 * @category models
 */
export interface Flow {
  /**
   * Model calls on the wire now (holding a concurrency permit). With it the line tells the tasks
   * taken up apart: `32 calling, 968 waiting` (in a backoff, on an open circuit, for a permit or
   * the budget); without it, `1000 running`.
   */
  readonly calls?: number
  /** The concurrency limit in force, when it moves (an adaptive limit). */
  readonly limit?: number
  /** The share (0..1) left of the tightest budget dimension that has a limit. */
  readonly budgetLeft?: number
  /** Calls waiting for the budget. */
  readonly budgetWaiting?: number
  /**
   * A budget shared through a store: by how many processes, and whether this one is on it
   * (`shared`) or went on alone because the store failed (`local`).
   */
  readonly budgetShared?: { readonly store: string; readonly processes: number; readonly mode: "shared" | "local" }
}

/**
 * A circuit breaker that is not closed: open (with when it lets a probe through), half-open (a
 * probe is testing the model), or isolated by hand. From `BreakerTransition` events.
 *
 * @since 0.1.0
 * @category models
 */
export interface Circuit {
  readonly breaker: string
  readonly state: "open" | "half-open" | "isolated"
  /** For an open circuit: the `Clock` time (ms) it becomes half-open, when known. */
  readonly probeAtMillis: Option.Option<number>
}

/**
 * The counters at one instant, with what follows from them and the `Clock`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot extends Counts {
  /** `succeeded + failed + invalid + skipped`. */
  readonly done: number
  readonly estimated: boolean
  readonly answeredAhead: number
  readonly circuits: ReadonlyArray<Circuit>
  /** Since the progress was made. */
  readonly elapsedMillis: number
  /** The `Clock` time (ms) of the snapshot, for when an open circuit probes. */
  readonly nowMillis: number
  /** Tasks this run finished (succeeded or failed) per second; none before any time has passed. */
  readonly perSecond: Option.Option<number>
  /** Time left at `perSecond`: none while the total or the rate is unknown (or 0), 0 once done. */
  readonly etaMillis: Option.Option<number>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Inputs in the run, when known. */
  readonly total?: number
  /**
   * Fed the tasks' outcomes only, never their events: the tasks run in other processes (`wiz run
   * --store … --no-work`). The line then leaves out what only events tell (retries, tasks
   * running) rather than show a 0 nobody counted. False by default.
   */
  readonly outcomesOnly?: boolean
}

/**
 * The progress service.
 *
 * @since 0.1.0
 * @category tags
 */
export class Progress extends Context.Tag("wiz-effect/Progress")<Progress, Progress.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace Progress {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Set (or, with `undefined`, forget) the total; `estimated` marks a guess (shown `~N`). The
     * total it already has is no change (no new snapshot on `changes`).
     */
    readonly setTotal: (total: number | undefined, options?: { readonly estimated?: boolean }) => Effect.Effect<void>
    /**
     * Set how many inputs not reached yet an earlier run already answered (`--resume`): no work
     * left, so not in the ETA; each `skipped` input counts one off. Set 0 once the input has
     * been read to its end (what is still counted was not in it).
     */
    readonly setAnsweredAhead: (n: number) => Effect.Effect<void>
    /** Count a task that started. */
    readonly started: Effect.Effect<void>
    /** Count a task that succeeded (leaving the tasks in flight). */
    readonly succeeded: Effect.Effect<void>
    /** Count a task that failed (leaving the tasks in flight). */
    readonly failed: Effect.Effect<void>
    /** Count an input that was not a task. */
    readonly invalid: Effect.Effect<void>
    /** Count `n` (1) inputs an earlier run answered (and `n` fewer answered ahead). */
    readonly skipped: (n?: number) => Effect.Effect<void>
    /** Count a retry. */
    readonly retried: Effect.Effect<void>
    /** Report the flow control (or, with `undefined`, forget it); the same report again is no change. */
    readonly setFlow: (flow: Flow | undefined) => Effect.Effect<void>
    /**
     * Count `self` as a task: started now, then succeeded or failed as it ends. Interrupted, it
     * leaves the tasks in flight without counting as failed.
     */
    readonly track: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
    /**
     * Count from an agent event: `TaskStarted`, `TaskFinished` (by status), `RetryScheduled`; a
     * `BreakerTransition` updates the circuits that are not closed.
     */
    readonly record: (event: AgentEvent.AgentEvent) => Effect.Effect<void>
    /** The snapshot now. */
    readonly snapshot: Effect.Effect<Snapshot>
    /** The snapshot now, then one on every change of the counters (timed by the `Clock` when read). */
    readonly changes: Stream.Stream<Snapshot>
  }
}

// -----------------------------------------------------------------------------
// constructors
// -----------------------------------------------------------------------------

const zero: Counts = {
  total: Option.none(),
  succeeded: 0,
  failed: 0,
  invalid: 0,
  skipped: 0,
  retries: 0,
  inFlight: 0,
  estimated: false,
  answeredAhead: 0,
  circuits: []
}

const nonNegativeInteger = (what: string, n: number | undefined): RangeError | undefined =>
  n !== undefined && !(Number.isInteger(n) && n >= 0)
    ? new RangeError(`Progress: ${what} must be a non-negative integer (got ${n})`)
    : undefined

const circuitState = (to: string): Circuit["state"] | "closed" =>
  to === "Open" ? "open" : to === "HalfOpen" ? "half-open" : to === "Isolated" ? "isolated" : "closed"

/** The circuits after a transition: a closed one leaves the list, any other takes its place. */
const transitioned = (circuits: ReadonlyArray<Circuit>, event: AgentEvent.BreakerTransition): ReadonlyArray<Circuit> => {
  const state = circuitState(event.to)
  const others = circuits.filter((circuit) => circuit.breaker !== event.breaker)
  if (state === "closed") return others
  const probeAtMillis = state === "open" ? Option.fromNullable(event.untilMillis) : Option.none()
  const at = circuits.findIndex((circuit) => circuit.breaker === event.breaker)
  const circuit: Circuit = { breaker: event.breaker, state, probeAtMillis }
  return at === -1 ? [...circuits, circuit] : circuits.map((c, i) => (i === at ? circuit : c))
}

/**
 * The snapshot of `counts` after `elapsedMillis`, at `Clock` time `nowMillis` (by default
 * `elapsedMillis`: a clock started at 0): done, rate and ETA. `inFlightMillis` is how long the
 * tasks in flight are expected to take still (see {@link Progress}'s ETA); the ETA is never
 * less.
 *
 * @since 0.1.0
 * @category constructors
 */
export const snapshotOf = (
  counts: Counts,
  elapsedMillis: number,
  nowMillis: number = elapsedMillis,
  inFlightMillis = 0
): Snapshot => {
  const done = counts.succeeded + counts.failed + counts.invalid + counts.skipped
  const answeredAhead = counts.answeredAhead ?? 0
  const perSecond = elapsedMillis > 0
    ? Option.some((counts.succeeded + counts.failed) / (elapsedMillis / 1000))
    : Option.none()
  const etaMillis = Option.flatMap(counts.total, (total): Option.Option<number> => {
    const left = total - done - answeredAhead
    if (left <= 0) return Option.some(0)
    return Option.isSome(perSecond) && perSecond.value > 0
      ? Option.some(Math.max((left / perSecond.value) * 1000, inFlightMillis))
      : Option.none()
  })
  return {
    ...counts,
    done,
    estimated: counts.estimated ?? false,
    answeredAhead,
    circuits: counts.circuits ?? [],
    elapsedMillis,
    nowMillis,
    perSecond,
    etaMillis
  }
}

/** Buckets 10% apart: a finished task's duration is kept to within 10%, in constant memory. */
const RATIO = 1.1
const bucketOf = (millis: number): number => (millis < 1 ? 0 : Math.floor(Math.log(millis) / Math.log(RATIO)) + 1)

/**
 * The durations of finished tasks, as a histogram, and what they say about a task still
 * running: how much longer it takes, given how long it has run.
 */
const makeDurations = () => {
  const counts: Array<number> = []
  const sums: Array<number> = []
  return {
    add: (millis: number) => {
      const b = bucketOf(Math.max(0, millis))
      for (let i = counts.length; i <= b; i++) {
        counts.push(0)
        sums.push(0)
      }
      counts[b]!++
      sums[b]! += millis
    },
    /**
     * The median time left of a task that has run `elapsed`, among the finished tasks that ran
     * longer; when none did, `elapsed` again (it may take as long again: never "about to end").
     */
    left: (elapsed: number): number => {
      let longer = 0
      for (let b = 0; b < counts.length; b++) if (counts[b]! > 0 && sums[b]! / counts[b]! > elapsed) longer += counts[b]!
      if (longer === 0) return elapsed
      let seen = 0
      for (let b = 0; b < counts.length; b++) {
        const mean = counts[b]! > 0 ? sums[b]! / counts[b]! : 0
        if (counts[b]! === 0 || mean <= elapsed) continue
        seen += counts[b]!
        if (seen * 2 >= longer) return mean - elapsed
      }
      return elapsed
    }
  }
}

/**
 * The snapshot as an event, for the `EventBus` or an events file.
 *
 * @since 0.1.0
 * @category constructors
 */
export const toEvent = (snapshot: Snapshot): AgentEvent.ProgressReported =>
  new AgentEvent.ProgressReported({
    done: snapshot.done,
    succeeded: snapshot.succeeded,
    failed: snapshot.failed,
    invalid: snapshot.invalid,
    skipped: snapshot.skipped,
    retries: snapshot.retries,
    inFlight: snapshot.inFlight,
    elapsedMillis: snapshot.elapsedMillis,
    ...Option.match(snapshot.total, { onNone: () => ({}), onSome: (total) => ({ total }) }),
    ...Option.match(snapshot.perSecond, { onNone: () => ({}), onSome: (perSecond) => ({ perSecond }) }),
    ...Option.match(snapshot.etaMillis, { onNone: () => ({}), onSome: (etaMillis) => ({ etaMillis }) })
  })

/**
 * New progress, all zero, its clock started now.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Progress.Service> =>
  Effect.gen(function*() {
    const total = options.total
    const badTotal = nonNegativeInteger("total", total)
    if (badTotal !== undefined) throw badTotal
    const ref = yield* SubscriptionRef.make<Counts>({
      ...zero,
      total: Option.fromNullable(total),
      ...(options.outcomesOnly === true ? { outcomesOnly: true } : {})
    })
    const startedAt = yield* Clock.currentTimeMillis
    const update = (f: (counts: Counts) => Counts) => SubscriptionRef.update(ref, f)
    // for the ETA: when each task in flight started (by task id, or a key per `track`), and how
    // long the finished ones took; beside the counters, so an update never copies them
    const running = new Map<unknown, number>()
    const durations = makeDurations()
    const begin = (key: unknown) => Effect.map(Clock.currentTimeMillis, (now) => void running.set(key, now))
    /** A task in flight ended, having taken `took` (ms, or the time since it began; none: withdrawn). */
    const end = (key: unknown, took?: number | "elapsed") =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const start = running.get(key)
        running.delete(key)
        const millis = took === "elapsed" ? (start === undefined ? undefined : now - start) : took
        if (millis !== undefined) durations.add(millis)
      })
    /** The longest the tasks in flight are expected to take still: the most of any one of them. */
    const inFlightMillis = (now: number): number => {
      // tasks started in the same 10% of age get one answer: the youngest's, the longest
      const youngest = new Map<number, number>()
      for (const start of running.values()) {
        const elapsed = Math.max(0, now - start)
        const b = bucketOf(elapsed)
        youngest.set(b, Math.min(youngest.get(b) ?? elapsed, elapsed))
      }
      let most = 0
      for (const elapsed of youngest.values()) most = Math.max(most, durations.left(elapsed))
      return most
    }
    const at = (counts: Counts) =>
      Effect.map(Clock.currentTimeMillis, (now) => snapshotOf(counts, now - startedAt, now, inFlightMillis(now)))
    const started = update((c) => ({ ...c, inFlight: c.inFlight + 1 }))
    const succeeded = update((c) => ({ ...c, succeeded: c.succeeded + 1, inFlight: Math.max(0, c.inFlight - 1) }))
    const failed = update((c) => ({ ...c, failed: c.failed + 1, inFlight: Math.max(0, c.inFlight - 1) }))
    const withdrawn = update((c) => ({ ...c, inFlight: Math.max(0, c.inFlight - 1) }))
    const retried = update((c) => ({ ...c, retries: c.retries + 1 }))
    return Progress.of({
      setTotal: (total, options) => {
        const bad = nonNegativeInteger("total", total)
        if (bad !== undefined) return Effect.die(bad)
        const next = Option.fromNullable(total)
        const estimated = total !== undefined && options?.estimated === true
        return Effect.flatMap(SubscriptionRef.get(ref), (c) =>
          Option.getEquivalence(Equal.equals)(c.total, next) && (c.estimated ?? false) === estimated
            ? Effect.void
            : update((c) => ({ ...c, total: next, estimated })))
      },
      setAnsweredAhead: (n) => {
        const bad = nonNegativeInteger("answeredAhead", n)
        return bad !== undefined ? Effect.die(bad) : update((c) => ({ ...c, answeredAhead: n }))
      },
      started,
      succeeded,
      failed,
      invalid: update((c) => ({ ...c, invalid: c.invalid + 1 })),
      skipped: (n = 1) =>
        update((c) => ({ ...c, skipped: c.skipped + n, answeredAhead: Math.max(0, (c.answeredAhead ?? 0) - n) })),
      retried,
      setFlow: (flow) =>
        Effect.flatMap(SubscriptionRef.get(ref), (c) =>
          c.flow?.calls === flow?.calls && c.flow?.limit === flow?.limit && c.flow?.budgetLeft === flow?.budgetLeft &&
            c.flow?.budgetWaiting === flow?.budgetWaiting && c.flow?.budgetShared?.processes === flow?.budgetShared?.processes &&
            c.flow?.budgetShared?.mode === flow?.budgetShared?.mode
            ? Effect.void
            : update(({ flow: _, ...c }) => (flow === undefined ? c : { ...c, flow }))),
      track: (self) =>
        Effect.uninterruptibleMask((restore) => {
          const key = {}
          return Effect.zipRight(
            Effect.zipRight(begin(key), started),
            Effect.onExit(restore(self), (exit) =>
              Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)
                ? Effect.zipRight(end(key), withdrawn)
                : Effect.zipRight(end(key, "elapsed"), Exit.isSuccess(exit) ? succeeded : failed))
          )
        }),
      record: (event) => {
        switch (event._tag) {
          case "TaskStarted":
            return Effect.zipRight(begin(event.taskId), started)
          case "TaskFinished":
            return Effect.zipRight(end(event.taskId, event.durationMs), event.status === "succeeded" ? succeeded : failed)
          case "RetryScheduled":
            return retried
          case "BreakerTransition":
            return update((c) => ({ ...c, circuits: transitioned(c.circuits ?? [], event) }))
          default:
            return Effect.void
        }
      },
      snapshot: Effect.flatMap(SubscriptionRef.get(ref), at),
      changes: Stream.mapEffect(ref.changes, at)
    })
  })

/**
 * Progress as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Progress> => Layer.effect(Progress, make(options))

// -----------------------------------------------------------------------------
// formatting
// -----------------------------------------------------------------------------

/**
 * `tty`: one line redrawn in place, with a bar. `plain`: a new line each time, no control
 * characters (a log file, CI).
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "tty" | "plain"

/**
 * The renderer's options.
 *
 * @since 0.1.0
 * @category models
 */
export interface RenderOptions {
  /** By default, `tty` when the `Terminal` says it is one. */
  readonly mode?: Mode
  /** Time between redraws: `defaults.ttyInterval` or `defaults.plainInterval` by mode. */
  readonly interval?: Duration.DurationInput
}

/**
 * A terminal line is redrawn at most every 100 ms (ten times a second: smooth to the eye, cheap
 * on a slow terminal); a plain line is written every 5 seconds (a log stays readable); the bar
 * is 20 cells wide; a terminal line is cut 3 columns short of the terminal's width.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  ttyInterval: Duration.millis(100),
  plainInterval: Duration.seconds(5),
  barWidth: 20,
  /**
   * Columns a terminal line leaves free at its end: the `^C` a terminal echoes on Ctrl-C (two)
   * and the cursor (one). On a line filled to the edge the echo wraps to the next row, where
   * the last draw cannot reach it back, leaving `^` (or `^C`) on the bar's row.
   */
  echoRoom: 3
} as const

/**
 * `42s`, `3m05s`, `1h02m`: whole seconds, rounded up.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatEta = (millis: number): string => {
  const s = Math.ceil(millis / 1000)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
}

const bar = (done: number, total: number): string => {
  const filled = total === 0 ? defaults.barWidth : Math.min(defaults.barWidth, Math.floor((done / total) * defaults.barWidth))
  return `[${"█".repeat(filled)}${"░".repeat(defaults.barWidth - filled)}]`
}

/**
 * A circuit as the line shows it: `circuit embedded open (probe in 12s)`, `... half-open
 * (probing)`, `... isolated`; an open circuit whose probe time has come is probing too.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatCircuit = (circuit: Circuit, nowMillis: number): string => {
  const name = `circuit ${circuit.breaker} ${circuit.state}`
  if (circuit.state === "half-open") return `${name} (probing)`
  if (circuit.state === "isolated") return name
  return Option.match(circuit.probeAtMillis, {
    onNone: () => name,
    onSome: (probeAt) => probeAt > nowMillis ? `${name} (probe in ${formatEta(probeAt - nowMillis)})` : `${name} (probing)`
  })
}

/**
 * The line for a snapshot, without control characters:
 * `[███░░] 120/300 (100 resumed), 3 failed, 7 retries, 8 running, 40.0/s, ETA 5s` on a TTY,
 * `120/300 done, ...` plain; an estimated total as `~300`; no bar and no ETA when the total is
 * unknown; `invalid` and `resumed` only when there are some; then each circuit that is not
 * closed (`circuit embedded open (probe in 12s)`); then the flow control when reported
 * (`limit 24`, `budget 45% left (3 waiting)`). The tasks taken up and not finished are `8
 * running`, or, when the flow control reports its calls, `8 calling, 24 waiting`: calls on
 * the wire, and the other tasks taken up (asleep in a backoff, on an open circuit, waiting for
 * a permit or the budget). Fed outcomes only, neither retries nor tasks running are shown.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (mode: Mode, snapshot: Snapshot): string => {
  let head = Option.match(snapshot.total, {
    onNone: () => `${snapshot.done} done`,
    onSome: (total) => {
      const shown = `${snapshot.estimated ? "~" : ""}${total}`
      return mode === "tty" ? `${bar(snapshot.done, total)} ${snapshot.done}/${shown}` : `${snapshot.done}/${shown} done`
    }
  })
  if (snapshot.skipped > 0) head += ` (${snapshot.skipped} resumed)`
  const parts = [head, `${snapshot.failed} failed`]
  if (snapshot.invalid > 0) parts.push(`${snapshot.invalid} invalid`)
  const calls = snapshot.flow?.calls
  if (snapshot.outcomesOnly !== true) {
    parts.push(
      `${snapshot.retries} retries`,
      ...(calls === undefined
        ? [`${snapshot.inFlight} running`]
        : [`${calls} calling`, `${Math.max(0, snapshot.inFlight - calls)} waiting`])
    )
  }
  parts.push(Option.match(snapshot.perSecond, { onNone: () => "--/s", onSome: (rate) => `${rate.toFixed(1)}/s` }))
  if (Option.isSome(snapshot.total)) {
    parts.push(Option.match(snapshot.etaMillis, { onNone: () => "ETA --", onSome: (eta) => `ETA ${formatEta(eta)}` }))
  }
  for (const circuit of snapshot.circuits) parts.push(formatCircuit(circuit, snapshot.nowMillis))
  const flow = snapshot.flow
  if (flow?.limit !== undefined) parts.push(`limit ${flow.limit}`)
  if (flow?.budgetLeft !== undefined) {
    const waiting = flow.budgetWaiting === undefined || flow.budgetWaiting === 0 ? "" : ` (${flow.budgetWaiting} waiting)`
    parts.push(`budget ${Math.round(Math.max(0, flow.budgetLeft) * 100)}% left${waiting}`)
  }
  const shared = flow?.budgetShared
  if (shared !== undefined) {
    parts.push(
      shared.mode === "shared"
        ? `budget shared by ${shared.processes} process${shared.processes === 1 ? "" : "es"} (${shared.store})`
        : `budget local (${shared.store} unavailable)`
    )
  }
  return parts.join(", ")
}

// -----------------------------------------------------------------------------
// rendering
// -----------------------------------------------------------------------------

/**
 * The progress line on a terminal, while its scope is open.
 *
 * @since 0.1.0
 * @category models
 */
export interface Renderer {
  /**
   * Run `write` (output to the same screen: a record, a log line ending with a newline) with the
   * progress line cleared before and redrawn after, so the two never interleave.
   */
  readonly around: <A, E, R>(write: Effect.Effect<A, E, R>) => Effect.Effect<A, E | PlatformError, R>
  /** Write `text` (a newline is added when missing) above the progress line. */
  readonly log: (text: string) => Effect.Effect<void, PlatformError>
  /** Draw the line now. */
  readonly draw: Effect.Effect<void, PlatformError>
}

const clear = "\r\x1b[K"

/**
 * Draw the progress on the `Terminal` until the scope closes. On a TTY: drawn at once, redrawn
 * every `interval` (100 ms) when its text changed, cut to the terminal's width less
 * `defaults.echoRoom` (a wrapped line could not be redrawn in place, nor could a `^C` echoed
 * past its end be cleared), and ended with a last draw and a newline when the scope closes
 * (however it closes: Ctrl-C's `^C` is drawn over). Otherwise: a plain line every `interval` (5 s), and the last state when the scope
 * closes. A draw that fails (the terminal went away) is logged and ends the drawing; the run
 * goes on.
 *
 * @since 0.1.0
 * @category constructors
 */
export const renderer = (
  options: RenderOptions = {}
): Effect.Effect<Renderer, never, Progress | Terminal.Terminal | Scope.Scope> =>
  Effect.gen(function*() {
    const progress = yield* Progress
    const terminal = yield* Terminal.Terminal
    const mode: Mode = options.mode ?? ((yield* terminal.isTTY) ? "tty" : "plain")
    const tty = mode === "tty"
    const interval = options.interval ?? (tty ? defaults.ttyInterval : defaults.plainInterval)
    const lock = yield* makeBulkhead({ permits: 1 })
    /** The text on screen now (tty), or the last line written (plain). */
    let shown: string | undefined = undefined

    const line = Effect.zipWith(progress.snapshot, terminal.columns, (snapshot, columns) => {
      const text = format(mode, snapshot)
      const room = columns - defaults.echoRoom
      return tty && room > 0 && text.length > room ? text.slice(0, room) : text
    })
    const drawUnlocked = (force: boolean): Effect.Effect<void, PlatformError> =>
      Effect.flatMap(line, (text) => {
        if (!force && text === shown) return Effect.void
        shown = text
        return terminal.display(tty ? `\r${text}\x1b[K` : `${text}\n`)
      })
    const draw = lock.withPermit(drawUnlocked(true))
    const around = <A, E, R>(write: Effect.Effect<A, E, R>): Effect.Effect<A, E | PlatformError, R> =>
      lock.withPermit(
        tty && shown !== undefined
          ? Effect.zipLeft(Effect.zipRight(terminal.display(clear), write), drawUnlocked(true))
          : write
      )

    const tick = lock.withPermit(drawUnlocked(false))
    const loop = tty
      ? Effect.repeat(tick, Schedule.spaced(interval))
      : Effect.schedule(tick, Schedule.spaced(interval))
    const drawing = Effect.catchAll(
      loop,
      (error) => Effect.logWarning(`Progress: the terminal failed; the progress line stops: ${error.message}`)
    )
    yield* Effect.acquireRelease(
      Effect.forkDaemon(Effect.interruptible(drawing)),
      (fiber) =>
        Effect.zipRight(
          Fiber.interrupt(fiber),
          lock.withPermit(
            tty
              ? Effect.zipRight(drawUnlocked(true), terminal.display("\n"))
              : drawUnlocked(false)
          ).pipe(Effect.catchAll((error) => Effect.logWarning(`Progress: the last draw failed: ${error.message}`)))
        )
    )
    return {
      around,
      log: (text) => around(terminal.display(text.endsWith("\n") ? text : `${text}\n`)),
      draw
    }
  })

/**
 * A `Terminal` that only displays: `display` writes with your function (stderr, say), `isTTY`
 * and `columns` are what you say (`columns` may be an effect, read at each draw, for a terminal
 * that can be resized), and reading input is a defect. For a {@link renderer} on a stream the
 * platform's `Terminal` does not draw on (it draws on stdout).
 *
 * @since 0.1.0
 * @category constructors
 */
export const outputTerminal = (options: {
  readonly display: (text: string) => Effect.Effect<void, PlatformError>
  readonly isTTY: boolean
  readonly columns?: number | Effect.Effect<number>
}): Terminal.Terminal => ({
  columns: typeof options.columns === "number" || options.columns === undefined
    ? Effect.succeed(options.columns ?? 0)
    : options.columns,
  rows: Effect.succeed(0),
  isTTY: Effect.succeed(options.isTTY),
  readInput: Effect.dieMessage("Progress.outputTerminal: this terminal only displays"),
  readLine: Effect.dieMessage("Progress.outputTerminal: this terminal only displays"),
  display: options.display
})
