/**
 * The argument vector of `wiz`, checked against the command definitions ({@link CommandSpec})
 * before `@effect/cli` parses it, so that a mistake is named for what it is:
 *
 * - an option the command does not have: `unknown option --concurency; did you mean
 *   --concurrency?`, or, when another command has it, which one (`--max-tokens is an option
 *   of wiz ask, not of wiz run`), instead of the parser blaming the value after it (`'3'`);
 * - an option given no value: `--output needs a value: --output FILE`, also when the next
 *   argument is another option (`-o --resume`), instead of "unknown argument '-o'";
 * - a command that does not exist (`did you mean run?`), a missing or extra argument.
 *
 * `-h` or `--help` anywhere before `--` asks for the help of the command it follows. The
 * arguments that pass are put in the order `@effect/cli` 0.77 reads as meant: options first,
 * then `--`, then the positional arguments (so `wiz run - -o out.jsonl` reads stdin; the parser
 * takes a lone `-` for an unknown option). {@link Given} holds the arguments as they were given,
 * for a command that repeats them (`wiz run`'s "To continue, run: ...").
 *
 * @example
 * ```ts
 * import * as Argv from "wiz-effect/cli/Argv"
 * import * as CommandSpec from "wiz-effect/cli/CommandSpec"
 * import * as Cli from "wiz-effect/cli/Cli"
 *
 * Argv.parse(CommandSpec.fromCommand(Cli.command), ["run", "--concurency", "3"])
 * // Either.left(UsageError: unknown option --concurency; did you mean --concurrency? ...)
 * ```
 *
 * @since 0.1.0
 */
import { AutoCorrect, CliConfig } from "@effect/cli"
import { Context, Either, Option } from "effect"
import * as CommandSpec from "./CommandSpec.js"
import * as Help from "./Help.js"
import { usage, type UsageError } from "./UsageError.js"

/**
 * The arguments `wiz` was given, after the executable, as given.
 *
 * @since 0.1.0
 * @category tags
 */
export class Given extends Context.Tag("wiz-effect/cli/Argv/Given")<Given, ReadonlyArray<string>>() {}

/**
 * What the arguments ask for: the help of the command at `path` (`[]`: the top command), or
 * to run with `args` (in the order `@effect/cli` reads, without the executable).
 *
 * @since 0.1.0
 * @category models
 */
export type Parsed =
  | { readonly _tag: "Help"; readonly path: ReadonlyArray<string> }
  | { readonly _tag: "Run"; readonly args: ReadonlyArray<string> }

const config = CliConfig.make({})

/** The candidate nearest to `word`, when it is near enough to be what was meant. */
const nearest = (word: string, candidates: ReadonlyArray<string>): Option.Option<string> => {
  let best: Option.Option<readonly [string, number]> = Option.none()
  for (const candidate of candidates) {
    const distance = AutoCorrect.levensteinDistance(word, candidate, config)
    if (distance <= config.autoCorrectLimit && (Option.isNone(best) || distance < best.value[1])) {
      best = Option.some([candidate, distance])
    }
  }
  return Option.map(best, ([candidate]) => candidate)
}

const isHelp = (arg: string) => arg === "--help" || arg === "-h"

/** An argument that names an option (`--x`, `--x=v`, `-o`), as opposed to a value or `-`. */
const looksLikeOption = (arg: string) => arg.startsWith("-") && arg !== "-" && !/^-\d/.test(arg)

/** The option `arg` names, and its value when written `--name=value`. */
const split = (arg: string): readonly [name: string, inline: Option.Option<string>] => {
  const eq = arg.indexOf("=")
  return arg.startsWith("--") && eq !== -1 ? [arg.slice(0, eq), Option.some(arg.slice(eq + 1))] : [arg, Option.none()]
}

/** `name` is not an option of `program`: say what was probably meant, or which command has it. */
const unknownOption = (name: string, options: ReadonlyArray<CommandSpec.OptionSpec>, program: string, elsewhere: Option.Option<string>) => {
  const hint = `(${program} --help lists its options)`
  const meant = nearest(name.startsWith("--") ? name : `-${name}`, options.map((o) => o.long))
  if (Option.isSome(meant)) return usage(`unknown option ${name}; did you mean ${meant.value}? ${hint}`)
  if (Option.isSome(elsewhere)) return usage(`${name} is an option of ${elsewhere.value}, not of ${program} ${hint}`)
  return usage(`unknown option ${name} ${hint}`)
}

const needsValue = (name: string, option: CommandSpec.OptionSpec, next: string | undefined) => {
  const value = Option.getOrElse(option.value, () => "VALUE")
  const alias = name === option.long ? "" : ` (${option.long})`
  const instead = next === undefined ? "" : ` (got the option ${next} instead)`
  return usage(`${name}${alias} needs a value: ${name} ${value.replaceAll(" | ", "|")}${instead}`)
}

/** The arguments of a command without subcommands, checked and ordered. */
const parseCommand = (
  command: CommandSpec.CommandSpec,
  path: ReadonlyArray<string>,
  args: ReadonlyArray<string>,
  program: string,
  /** Which other command has an option, for an option this one does not have. */
  elsewhere: (name: string) => Option.Option<string>
): Either.Either<Parsed, UsageError> => {
  const end = args.indexOf("--")
  const before = end === -1 ? args : args.slice(0, end)
  if (before.some(isHelp)) return Either.right({ _tag: "Help", path })
  const options: Array<string> = []
  const positional: Array<string> = []
  for (let i = 0; i < before.length; i++) {
    const arg = before[i]!
    if (!looksLikeOption(arg)) {
      positional.push(arg)
      continue
    }
    const [name, inline] = split(arg)
    const option = CommandSpec.option(command, name)
    if (Option.isNone(option)) return Either.left(unknownOption(name, command.options, program, elsewhere(name)))
    options.push(arg)
    if (Option.isNone(option.value.value) || Option.isSome(inline)) continue
    const next = before[i + 1]
    if (next === undefined || (looksLikeOption(next) && Option.isSome(CommandSpec.option(command, split(next)[0])))) {
      return Either.left(needsValue(name, option.value, next))
    }
    options.push(next)
    i++
  }
  if (end !== -1) positional.push(...args.slice(end + 1))
  const required = command.args.filter((arg) => !arg.optional)
  const line = `usage: ${Help.usage(command, program)}`
  if (positional.length < required.length) {
    const missing = required.slice(positional.length).map((arg) => arg.name).join(" ")
    return Either.left(usage(`missing ${missing} (${line})`))
  }
  const most = command.args.some((arg) => arg.repeated) ? Number.POSITIVE_INFINITY : command.args.length
  if (positional.length > most) return Either.left(usage(`unexpected argument ${positional[most]} (${line})`))
  return Either.right({ _tag: "Run", args: [...path, ...options, ...(positional.length > 0 ? ["--", ...positional] : [])] })
}

/**
 * Check `args` (after the executable) against `root` and its subcommands; `extra` are the
 * top command's own options (`--version`). A mistake is a {@link UsageError} saying what was
 * wrong and what was probably meant.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (
  root: CommandSpec.CommandSpec,
  args: ReadonlyArray<string>,
  extra: ReadonlyArray<CommandSpec.OptionSpec> = []
): Either.Either<Parsed, UsageError> => {
  const [first, ...rest] = args
  if (first === undefined || isHelp(first)) return Either.right({ _tag: "Help", path: [] })
  if (looksLikeOption(first)) {
    const top = [...root.options, ...extra, Help.helpOption]
    const [name] = split(first)
    return top.some((o) => o.long === name || Option.contains(o.short, name))
      ? Either.right({ _tag: "Run", args })
      : Either.left(unknownOption(name, top, root.name, Option.none()))
  }
  const command = root.subcommands.find((sub) => sub.name === first)
  if (command === undefined) {
    const meant = nearest(first, root.subcommands.map((sub) => sub.name))
    return Either.left(usage(
      `unknown command ${first}${Option.match(meant, { onNone: () => "", onSome: (m) => `; did you mean ${m}?` })} ` +
        `(${root.name} --help lists the commands)`
    ))
  }
  const elsewhere = (name: string) =>
    Option.fromNullable(root.subcommands.find((sub) => sub !== command && Option.isSome(CommandSpec.option(sub, name))))
      .pipe(Option.map((sub) => `${root.name} ${sub.name}`))
  return parseCommand(command, [first], rest, `${root.name} ${first}`, elsewhere)
}

const SAFE = /^[\w@%+=:,./-]+$/

/**
 * Words as a command to paste into a POSIX shell: each quoted unless it needs no quotes.
 *
 * @since 0.1.0
 * @category formatting
 */
export const shellCommand = (words: ReadonlyArray<string>): string =>
  words.map((word) => (SAFE.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`)).join(" ")
