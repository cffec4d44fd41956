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
 * Help is rendered from the command definitions ({@link Help}), and the arguments are checked
 * against them before `@effect/cli` parses them ({@link Argv}), so a new subcommand added to
 * {@link command} gets both. Help and errors are written through {@link Stdio.Stdio} like
 * everything else, without ANSI colours unless the stream is a terminal and `NO_COLOR` is unset.
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
import { Command, HelpDoc, ValidationError } from "@effect/cli"
import { Cause, Config, Console, Effect, Exit, Option } from "effect"
import { format } from "node:util"
import * as Argv from "./Argv.js"
import * as AskCommand from "./AskCommand.js"
import * as CommandSpec from "./CommandSpec.js"
import * as Help from "./Help.js"
import * as RunCommand from "./RunCommand.js"
import * as ServeCommand from "./ServeCommand.js"
import { Stdio } from "./Stdio.js"
import * as StoreCommands from "./StoreCommands.js"
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
  Command.withSubcommands([RunCommand.command, AskCommand.command, ServeCommand.command, StoreCommands.worker, StoreCommands.status])
)

/**
 * The options of the top command that `@effect/cli` answers (`-h` and `--help`, answered by
 * {@link Help}, are on every command).
 *
 * @since 0.1.0
 * @category commands
 */
export const topOptions: ReadonlyArray<CommandSpec.OptionSpec> = [
  { long: "--version", short: Option.none(), value: Option.none(), description: "Print the version", group: Option.none() },
  {
    long: "--completions",
    short: Option.none(),
    value: Option.some("SHELL"),
    description: "Print a completion script for sh, bash, fish or zsh",
    group: Option.none()
  }
]

/**
 * What `wiz`'s command definitions say, for {@link Help} and {@link Argv}.
 *
 * @since 0.1.0
 * @category commands
 */
export const spec: CommandSpec.CommandSpec = CommandSpec.fromCommand(command)

const ansi = /\x1b\[[0-9;]*m/g

/**
 * Text for a stream: colours only on a terminal without `NO_COLOR` (https://no-color.org:
 * set and not empty).
 */
const colorFor = Effect.gen(function*() {
  const noColor = (yield* Config.string("NO_COLOR").pipe(Config.withDefault(""), Effect.orDie)) !== ""
  return (isTTY: boolean) => isTTY && !noColor
})

/**
 * The console `@effect/cli` prints on: `Console.log` (`--version`, `--completions`) on stdout
 * through {@link Stdio.Stdio}, plain unless it is a terminal. Its parse errors are not printed
 * here: the run fails with them and {@link report} says them, like every other error.
 */
const stdioConsole = Effect.gen(function*() {
  const stdio = yield* Stdio
  const base = yield* Console.consoleWith(Effect.succeed)
  const color = (yield* colorFor)(stdio.stdoutIsTTY)
  return {
    ...base,
    log: (...args: ReadonlyArray<unknown>) => writeOut(stdio, `${format(...args)}\n`, color),
    error: () => Effect.void
  } satisfies Console.Console
})

/** Write on stdout; a reader that went away (`wiz --help | head -1`) is said where it can be read. */
const writeOut = (stdio: Stdio.Service, text: string, color: boolean) =>
  stdio.stdout(color ? text : text.replace(ansi, "")).pipe(
    Effect.catchAll((error) => stdio.stderr(`wiz: cannot write on stdout: ${error.message}\n`))
  )

const runCommand = Command.run(command, { name: "wiz", version })

/**
 * Parse an argument vector (`process.argv`: the first two entries are the runtime and the
 * script) and run the command it names: the arguments are checked against the command
 * definitions first ({@link Argv.parse}: a mistake is a {@link UsageError} naming it), `--help`
 * prints {@link Help} on stdout, and the command runs with {@link Argv.Given} holding the
 * arguments as given.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const [runtime = "node", script = "wiz", ...args] = argv
    const parsed = yield* Argv.parse(spec, args, topOptions)
    if (parsed._tag === "Help") {
      const stdio = yield* Stdio
      const color = (yield* colorFor)(stdio.stdoutIsTTY)
      const command = parsed.path.reduce((at, name) => at.subcommands.find((sub) => sub.name === name) ?? at, spec)
      const text = Help.render(command, {
        program: [spec.name, ...parsed.path].join(" "),
        color,
        ...(parsed.path.length === 0 ? { version, extra: topOptions } : {})
      })
      return yield* writeOut(stdio, text, color)
    }
    const console = yield* stdioConsole
    return yield* runCommand([runtime, script, ...parsed.args]).pipe(
      Effect.withConsole(console),
      Effect.provideService(Argv.Given, args)
    )
  })

/**
 * The signals that stop a run, and their numbers.
 *
 * @since 0.1.0
 * @category running
 */
export const signals = { SIGINT: 2, SIGTERM: 15 } as const

/**
 * The commands for which SIGTERM is the normal way to stop (`wiz worker`): they exit 0 on it.
 *
 * @since 0.1.0
 * @category running
 */
export const stopOnTerm: ReadonlySet<string> = new Set(["worker"])

/**
 * The exit code of a finished run; an interrupted one exits `128 + n` for the signal that
 * interrupted it (SIGINT when none is given, as for Ctrl-C), or 0 for a `command` in
 * {@link stopOnTerm} stopped by SIGTERM.
 *
 * @since 0.1.0
 * @category running
 */
export const exitCode = <E, A>(exit: Exit.Exit<A, E>, signal: keyof typeof signals = "SIGINT", command?: string): number => {
  if (Exit.isSuccess(exit)) return 0
  if (Cause.isInterruptedOnly(exit.cause)) return signal === "SIGTERM" && command !== undefined && stopOnTerm.has(command) ? 0 : 128 + signals[signal]
  return Option.match(Cause.failureOption(exit.cause), {
    onNone: () => 1,
    onSome: (error) => (ValidationError.isValidationError(error) || error instanceof UsageError ? 2 : 1)
  })
}

const messageOf = (error: unknown): string => {
  if (ValidationError.isValidationError(error)) return HelpDoc.toAnsiText(error.error).replace(ansi, "").trim()
  return error instanceof Error ? error.message : String(error)
}

/**
 * Say on stderr why a run failed: `wiz: <message>` for a typed error (an option value
 * `@effect/cli` refused included), the whole cause for a defect. An interruption needs no words.
 *
 * @since 0.1.0
 * @category running
 */
export const report = <E>(cause: Cause.Cause<E>): Effect.Effect<void, never, Stdio> =>
  Effect.flatMap(Stdio, (stdio) => {
    if (Cause.isInterruptedOnly(cause)) return Effect.void
    return Option.match(Cause.failureOption(cause), {
      onNone: () => stdio.stderr(`wiz: ${Cause.pretty(cause)}\n`),
      onSome: (error) => stdio.stderr(`wiz: ${messageOf(error)}\n`)
    })
  })
