/**
 * The `wiz` command line: its command tree, how it runs an argument vector, and what a failed
 * run prints and exits with. `main.ts` provides the Node.js context; tests run {@link run}
 * with their own {@link Stdio.Stdio} and a temporary directory.
 *
 * Exit codes: 0 when the command did its work (a run where some tasks failed included), 2 for a
 * usage error (a bad option, `--resume` without `--output`, a model not available), 128 + the
 * signal's number when a signal stopped it (130 for SIGINT, 143 for SIGTERM), 1 for anything
 * else (an unreadable input, an unwritable output).
 *
 * Help and parse errors are written through {@link Stdio.Stdio} like everything else, without
 * ANSI colours unless the stream is a terminal and `NO_COLOR` is unset.
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
import { Cause, Config, Console, Effect, Exit, Option } from "effect"
import { format } from "node:util"
import * as AskCommand from "./AskCommand.js"
import * as OptionValue from "./OptionValue.js"
import * as RunCommand from "./RunCommand.js"
import { Stdio } from "./Stdio.js"
import { UsageError } from "./UsageError.js"

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
  Command.withSubcommands([RunCommand.command, AskCommand.command])
)

const subcommands: ReadonlyArray<string> = ["run", "ask"]

/**
 * The argument vector as `@effect/cli` 0.77 needs it to do what a user means:
 * - `wiz run ... --help`: the parser prints the subcommand's usage as `$ run ...`; asked as
 *   `wiz --help run --help` it prints `$ wiz run ...` (the other arguments do not change help).
 * - `wiz run - -o x`: the parser takes a lone `-` for an unknown flag and refuses what follows;
 *   moved behind `--` it is the input argument. A `-` that is the value of an option
 *   (`-o -`) stays where it is.
 *
 * @since 0.1.0
 * @category running
 */
export const normalizeArgs = (argv: ReadonlyArray<string>): ReadonlyArray<string> => {
  const [runtime = "node", script = "wiz", ...args] = argv
  const end = args.indexOf("--")
  const options = end === -1 ? args : args.slice(0, end)
  const forced = end === -1 ? [] : args.slice(end + 1)
  if (!subcommands.includes(options[0] ?? "")) return argv
  if (options.includes("--help") || options.includes("-h")) return [runtime, script, "--help", options[0]!, "--help"]
  let stdin = -1
  for (let i = 1; i < options.length; i++) {
    const arg = options[i]!
    if (arg === "-") {
      stdin = i
      break
    }
    const takesValue = arg.startsWith("-") && !arg.includes("=") && !OptionValue.flags.includes(arg)
    if (takesValue) i++
  }
  if (stdin === -1) return argv
  return [runtime, script, ...options.slice(0, stdin), ...options.slice(stdin + 1), "--", "-", ...forced]
}

const ansi = /\x1b\[[0-9;]*m/g

/**
 * `Console.log` on stdout and `Console.error` on stderr through {@link Stdio.Stdio}, which is
 * where `@effect/cli` prints help and parse errors; colours only on a terminal without
 * `NO_COLOR` (https://no-color.org: set and not empty).
 */
const stdioConsole = Effect.gen(function*() {
  const stdio = yield* Stdio
  const base = yield* Console.consoleWith(Effect.succeed)
  const noColor = (yield* Config.string("NO_COLOR").pipe(Config.withDefault(""), Effect.orDie)) !== ""
  const text = (args: ReadonlyArray<unknown>, color: boolean) => {
    const line = `${format(...args)}\n`
    return color && !noColor ? line : line.replace(ansi, "")
  }
  return {
    ...base,
    log: (...args: ReadonlyArray<unknown>) =>
      stdio.stdout(text(args, stdio.stdoutIsTTY)).pipe(
        // help for a reader that went away (`wiz --help | head -1`): say so where it can be read
        Effect.catchAll((error) => stdio.stderr(`wiz: cannot write on stdout: ${error.message}\n`))
      ),
    error: (...args: ReadonlyArray<unknown>) => stdio.stderr(text(args, stdio.stderrIsTTY))
  } satisfies Console.Console
})

const runCommand = Command.run(command, { name: "wiz", version })

/**
 * Parse an argument vector (`process.argv`: the first two entries are the runtime and the
 * script) and run the command it names.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (argv: ReadonlyArray<string>) =>
  Effect.flatMap(stdioConsole, (console) => runCommand(normalizeArgs(argv)).pipe(Effect.withConsole(console)))

/**
 * The signals that stop a run, and their numbers.
 *
 * @since 0.1.0
 * @category running
 */
export const signals = { SIGINT: 2, SIGTERM: 15 } as const

/**
 * The exit code of a finished run; an interrupted one exits `128 + n` for the signal that
 * interrupted it (SIGINT when none is given, as for Ctrl-C).
 *
 * @since 0.1.0
 * @category running
 */
export const exitCode = <E, A>(exit: Exit.Exit<A, E>, signal: keyof typeof signals = "SIGINT"): number => {
  if (Exit.isSuccess(exit)) return 0
  if (Cause.isInterruptedOnly(exit.cause)) return 128 + signals[signal]
  return Option.match(Cause.failureOption(exit.cause), {
    onNone: () => 1,
    onSome: (error) => (ValidationError.isValidationError(error) || error instanceof UsageError ? 2 : 1)
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
