/**
 * The command line asked for something that cannot be done: `--resume` without `--output`, a
 * model that is not available, an option that does not apply to the model chosen. `wiz` exits
 * 2 on it, before anything is opened.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { UsageError } from "wiz-effect/cli/UsageError"
 *
 * const refused = Effect.fail(new UsageError({ reason: "--resume needs --output FILE" }))
 * ```
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * The command line asked for something that cannot be done; `reason` says what and why.
 *
 * @since 0.1.0
 * @category errors
 */
export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  reason: Schema.String
}) {
  override get message(): string {
    return this.reason
  }
}

/**
 * A usage error saying `reason`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const usage = (reason: string): UsageError => new UsageError({ reason })
