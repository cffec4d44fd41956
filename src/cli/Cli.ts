/**
 * The `wiz` command line: its command tree, how it runs an argument vector, and what a failed
 * run prints and exits with. `main.ts` provides the Node.js context; tests run {@link run}
 * with their own {@link Stdio.Stdio} and a temporary directory.
 *
 * Exit codes: 0 when the command did its work (a run where some tasks failed included), 2 for a
 * usage error (a bad option, `--resume` without `--output`, a model not available), 130 when
 * interrupted, 1 for anything else (an unreadable input, an unwritable output).
 *
 * @example
 * ```ts
 * import { NodeContext } from "@effect/platform-node"
 * import { Effect, Layer } from "effect"
 * import * as Cli from "wiz-effect/cli/Cli"
 * import * as Stdio from "wiz-effect/cli/Stdio"
 *
 * Cli.run(["node", "wiz", "run", "tasks.jsonl", "--no-progress"]).pipe(
 *   Effect.provide(Layer.merge(NodeContext.layer, Stdio.layer))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Command, ValidationError } from "@effect/cli"
import { Cause, Effect, Exit, Option } from "effect"
import * as RunCommand from "./RunCommand.js"
import { Stdio } from "./Stdio.js"

/**
 * The version `wiz --version` prints.
 *
 * @since 0.1.0
 * @category constants
 */
export const version = "0.1.0"

/**
 * `wiz` and its subcommands.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("wiz").pipe(
  Command.withDescription("Run AI agent tasks with retries, a circuit breaker and concurrency limits."),
  Command.withSubcommands([RunCommand.command])
)

/**
 * Parse an argument vector (`process.argv`: the first two entries are the runtime and the
 * script) and run the command it names.
 *
 * @since 0.1.0
 * @category running
 */
export const run = Command.run(command, { name: "wiz", version })

/**
 * The exit code of a finished run.
 *
 * @since 0.1.0
 * @category running
 */
export const exitCode = <E, A>(exit: Exit.Exit<A, E>): number => {
  if (Exit.isSuccess(exit)) return 0
  if (Cause.isInterruptedOnly(exit.cause)) return 130
  return Option.match(Cause.failureOption(exit.cause), {
    onNone: () => 1,
    onSome: (error) => (ValidationError.isValidationError(error) || error instanceof RunCommand.UsageError ? 2 : 1)
  })
}

/**
 * Say on stderr why a run failed: `wiz: <message>` for a typed error, the whole cause for a
 * defect. A parse error was already printed with its help by the command line itself, and an
 * interruption needs no words.
 *
 * @since 0.1.0
 * @category running
 */
export const report = <E>(cause: Cause.Cause<E>): Effect.Effect<void, never, Stdio> =>
  Effect.flatMap(Stdio, (stdio) => {
    if (Cause.isInterruptedOnly(cause)) return Effect.void
    return Option.match(Cause.failureOption(cause), {
      onNone: () => stdio.stderr(`wiz: ${Cause.pretty(cause)}\n`),
      onSome: (error) =>
        ValidationError.isValidationError(error)
          ? Effect.void
          : stdio.stderr(`wiz: ${error instanceof Error ? error.message : String(error)}\n`)
    })
  })
