/**
 * The live progress line of `wiz run` on stderr: lines done of the total, tasks failed,
 * retries scheduled, the rate in tasks per second, the time left, and any circuit that is not
 * closed with when it will probe again (seed bug 13: `processWithProgress` reported a
 * percentage only). On a terminal it is one line redrawn in
 * place with a bar; elsewhere (a log file, CI) it degrades to a plain line every few seconds.
 * It is redrawn on a `Schedule`, so it follows Effect's `Clock` and `TestClock` drives it.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import * as Progress from "wiz-effect/cli/Progress"
 *
 * Progress.render("plain", {
 *   done: 120,
 *   total: Option.some({ lines: 300, estimated: false }),
 *   failed: 3,
 *   retries: 7,
 *   finished: 120,
 *   elapsedMillis: 3000
 * })
 * // "120/300 done, 3 failed, 7 retries, 40.0/s, ETA 5s\n"
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Fiber, identity, Option, Schedule } from "effect"
import type { Scope } from "effect"
import { Stdio } from "./Stdio.js"

/**
 * How many input lines there are: counted (the input was read to its end), or estimated from
 * the bytes read so far (shown as `~N`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Total {
  readonly lines: number
  readonly estimated: boolean
}

/**
 * The counters the line shows.
 *
 * @since 0.1.0
 * @category models
 */
export interface Counts {
  /** Input lines accounted for: records written, plus lines an earlier run answered. */
  readonly done: number
  /** Tasks that failed. */
  readonly failed: number
  /** Retries scheduled. */
  readonly retries: number
  /** Tasks this run answered or failed: what the rate counts. */
  readonly finished: number
  /** Circuits that are not closed now: tasks wait on them. */
  readonly circuits?: ReadonlyArray<Circuit>
}

/**
 * A circuit breaker that is not closed, as the line shows it: open (and when it will let a
 * probe through), half-open (a probe is testing the model), or isolated by hand.
 *
 * @since 0.1.0
 * @category models
 */
export interface Circuit {
  readonly breaker: string
  readonly state: "open" | "half-open" | "isolated"
  /** Clock time (ms) an open circuit becomes half-open. */
  readonly probeAtMillis?: number
}

/**
 * The counters at one instant, with the total as far as known and the time since the start.
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot extends Counts {
  /** Non-blank input lines; none when not known yet (a pipe not read to its end). */
  readonly total: Option.Option<Total>
  /** Lines not reached yet that an earlier run already answered (`--resume`): no work left. */
  readonly answeredAhead: number
  readonly elapsedMillis: number
  /** Clock time (ms) of the snapshot, for when a circuit will probe. */
  readonly nowMillis?: number
}

/**
 * `tty`: one line redrawn in place with a bar. `plain`: a new line each time.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "tty" | "plain"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly mode: Mode
  /** Non-blank input lines as far as known, read at each redraw. */
  readonly total: Effect.Effect<Option.Option<Total>>
  /** Lines not reached yet that an earlier run already answered (`--resume`); none: 0. */
  readonly answeredAhead?: Effect.Effect<number>
  /** Time between redraws: `defaults.ttyInterval` or `defaults.plainInterval` by mode. */
  readonly interval?: Duration.DurationInput
}

/**
 * A terminal line is redrawn every 100 ms; a plain line is written every 5 seconds; the bar is
 * 20 cells wide.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  ttyInterval: Duration.millis(100),
  plainInterval: Duration.seconds(5),
  barWidth: 20
} as const

/**
 * `42s`, `3m05s`, `1h02m`: whole seconds, rounded up.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatEta = (seconds: number): string => {
  const s = Math.ceil(seconds)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
}

const bar = (done: number, total: number): string => {
  const filled = total === 0 ? defaults.barWidth : Math.min(defaults.barWidth, Math.floor((done / total) * defaults.barWidth))
  return `[${"█".repeat(filled)}${"░".repeat(defaults.barWidth - filled)}]`
}

/**
 * The text to write for a snapshot: on a terminal `\r`, the line, and an erase-to-end-of-line;
 * otherwise the line and a newline. The rate is `finished` per second of `elapsedMillis` (lines
 * an earlier run answered are not in it); the ETA divides the work left by it: the lines left,
 * less those an earlier run answered that are still ahead (`--` while there is no rate yet).
 *
 * @since 0.1.0
 * @category formatting
 */
export const render = (mode: Mode, snapshot: Snapshot): string => {
  const rate = snapshot.elapsedMillis > 0 ? snapshot.finished / (snapshot.elapsedMillis / 1000) : undefined
  const parts = [
    `${snapshot.failed} failed`,
    `${snapshot.retries} retries`,
    rate === undefined ? "--/s" : `${rate.toFixed(1)}/s`
  ]
  let head = `${snapshot.done} done`
  if (Option.isSome(snapshot.total)) {
    const total = snapshot.total.value.lines
    const shown = `${snapshot.total.value.estimated ? "~" : ""}${total}`
    const left = Math.max(0, total - snapshot.done - snapshot.answeredAhead)
    head = mode === "tty" ? `${bar(snapshot.done, total)} ${snapshot.done}/${shown}` : `${snapshot.done}/${shown} done`
    parts.push(left === 0 ? "ETA 0s" : rate === undefined || rate === 0 ? "ETA --" : `ETA ${formatEta(left / rate)}`)
  }
  for (const circuit of snapshot.circuits ?? []) parts.push(describeCircuit(circuit, snapshot.nowMillis))
  const line = [head, ...parts].join(", ")
  return mode === "tty" ? `\r${line}\x1b[K` : `${line}\n`
}

const describeCircuit = (circuit: Circuit, now: number | undefined): string => {
  if (circuit.state !== "open") return `circuit ${circuit.breaker} ${circuit.state}${circuit.state === "half-open" ? " (probing)" : ""}`
  const left = circuit.probeAtMillis === undefined || now === undefined ? undefined : circuit.probeAtMillis - now
  return `circuit ${circuit.breaker} open${left === undefined ? "" : left > 0 ? ` (probe in ${formatEta(left / 1000)})` : " (probing)"}`
}

/**
 * A drawn progress line, and how to write around it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Line {
  /**
   * Run `effect`, a write to the terminal the line is on (records on stdout when it is that
   * terminal too), with the line out of its way: cleared before, drawn again after, so the
   * two never share a row. A plain line needs nothing of the kind.
   */
  readonly above: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/**
 * No progress line (`--no-progress`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Line = { above: identity }

const clearLine = "\r\x1b[K"

/**
 * Draw the progress line on stderr until the scope closes. On a terminal it is drawn at once
 * and redrawn every interval, and a last redraw ends it with a newline when the scope closes;
 * a plain line is first written one interval after the start.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (
  counts: Effect.Effect<Counts>,
  options: Options
): Effect.Effect<Line, never, Stdio | Scope.Scope> =>
  Effect.gen(function*() {
    const stdio = yield* Stdio
    const startedAt = yield* Clock.currentTimeMillis
    const snapshot = Effect.map(
      Effect.all([counts, options.total, options.answeredAhead ?? Effect.succeed(0), Clock.currentTimeMillis]),
      ([counts, total, answeredAhead, now]): Snapshot => ({
        ...counts,
        total,
        answeredAhead,
        elapsedMillis: now - startedAt,
        nowMillis: now
      })
    )
    // one writer at a time on the terminal: a redraw never lands between a clear and a record
    const lock = yield* Effect.makeSemaphore(1)
    const drawNow = Effect.flatMap(snapshot, (snapshot) => stdio.stderr(render(options.mode, snapshot)))
    const draw = lock.withPermits(1)(drawNow)
    const loop = options.mode === "tty"
      ? Effect.repeat(draw, Schedule.spaced(options.interval ?? defaults.ttyInterval))
      : Effect.schedule(draw, Schedule.spaced(options.interval ?? defaults.plainInterval))
    yield* Effect.acquireRelease(
      Effect.forkDaemon(Effect.interruptible(loop)),
      (fiber) =>
        Effect.zipRight(
          Fiber.interrupt(fiber),
          options.mode === "tty" ? Effect.zipRight(draw, stdio.stderr("\n")) : Effect.void
        )
    )
    return options.mode === "tty"
      ? { above: (effect) => lock.withPermits(1)(Effect.zipRight(stdio.stderr(clearLine), Effect.ensuring(effect, drawNow))) }
      : none
  })
