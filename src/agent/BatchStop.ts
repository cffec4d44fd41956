/**
 * Stops a batch early when the provider keeps refusing its credentials. A wrong or revoked API
 * key fails every call with `AuthenticationFailed` (HTTP 401/403; not a quota, which is
 * `QuotaExhausted`), and retrying cannot help: without a stop, every task of the batch spends a
 * call to learn what the first one already knew. After `after` tasks in a row fail that way
 * (a task that succeeds starts the count again), the service is stopped: a task that starts
 * from then on gets a `BatchStopped` record at once, without a call, saying why; tasks already
 * on the wire end on their own. `wiz run --resume` runs the stopped tasks again once the key is
 * fixed. A stopped service stays stopped: build a new one with the new key.
 *
 * Why a module of its own: it is the one piece of state that decides about a task before any
 * policy runs, and it learns from the records tasks end with (`TaskRecord`).
 *
 * @since 0.1.0
 */
import { Cause, Effect, Exit, Schema } from "effect"
import * as ErrorInfo from "../events/ErrorInfo.js"

/**
 * The task was not run: the service stopped after the provider refused its credentials
 * `after` tasks in a row; `error` is the last refusal.
 *
 * @since 0.1.0
 * @category errors
 */
export class BatchStopped extends Schema.TaggedError<BatchStopped>()("BatchStopped", {
  after: Schema.Number,
  error: ErrorInfo.ErrorInfo
}) {
  override get message(): string {
    return `not run: the provider refused the credentials ${this.after} tasks in a row (${this.error.message}); ` +
      "fix the key and run the batch again (wiz run --resume)"
  }
}

/**
 * The stop of one service: whether it has stopped, and what it learns from each task's end.
 *
 * @since 0.1.0
 * @category models
 */
export class BatchStop {
  private inARow = 0
  /** Why the service stopped, once it has. */
  stopped: BatchStopped | undefined = undefined

  constructor(readonly after: number) {}

  /** Learns from how a task ended: a refusal counts, a success starts the count again. */
  observe(outcome: Exit.Exit<unknown, { readonly _tag: string; readonly message: string }>): void {
    if (Exit.isSuccess(outcome)) {
      this.inARow = 0
      return
    }
    const failure = Cause.failureOption(outcome.cause)
    if (failure._tag === "None" || failure.value._tag !== "AuthenticationFailed") return
    if (++this.inARow >= this.after && this.stopped === undefined) {
      this.stopped = new BatchStopped({ after: this.after, error: ErrorInfo.fromError(failure.value) })
    }
  }
}

/**
 * A stop after `after` refusals in a row; `after` must be a positive integer (anything else
 * dies with a `RangeError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (after: number): Effect.Effect<BatchStop> =>
  Number.isInteger(after) && after >= 1
    ? Effect.sync(() => new BatchStop(after))
    : Effect.die(new RangeError(`BatchStop: after must be a positive integer (got ${after})`))
