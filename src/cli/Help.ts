/**
 * `--help`, rendered from the command definitions ({@link CommandSpec}) the way command-line
 * tools people know print it (ripgrep's `-h`, curl's `--help`): what the command does, a usage
 * line, then its options in groups, one line each with its value and its default. A command
 * with subcommands lists them with the first sentence of each one's description.
 *
 * Nothing here is written per command: a subcommand added to `Cli.command` gets its help from
 * its own definition, with `Options.withDescription(CommandSpec.grouped("Group", "What it
 * does (default X)"))` placing an option in a group. A name column wider than
 * {@link defaults} `.nameWidth` puts that option's description on the next line.
 *
 * @example
 * ```ts
 * import * as CommandSpec from "wiz-effect/cli/CommandSpec"
 * import * as Help from "wiz-effect/cli/Help"
 * import * as Cli from "wiz-effect/cli/Cli"
 *
 * const wiz = CommandSpec.fromCommand(Cli.command)
 * const text = Help.render(wiz.subcommands[0]!, { program: "wiz run", color: false })
 * ```
 *
 * @since 0.1.0
 */
import { Option } from "effect"
import type { CommandSpec, OptionSpec } from "./CommandSpec.js"

/**
 * The widest name column (options and commands) before a description moves to its own line,
 * and the width prose is wrapped at.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  nameWidth: 30,
  /** Prose (a command's description) is wrapped at this width. */
  textWidth: 80
} as const

/**
 * How to render.
 *
 * @since 0.1.0
 * @category models
 */
export interface RenderOptions {
  /** How the command is invoked: `wiz`, `wiz run`. */
  readonly program: string
  /** Bold headings (a terminal without `NO_COLOR`). */
  readonly color: boolean
  /** The program's version, on a first line of its own (the top command's help). */
  readonly version?: string
  /** Options the command line adds (the top command's `--version`), listed with the general ones. */
  readonly extra?: ReadonlyArray<OptionSpec>
}

/**
 * `--help` and `-h`, which every command has; `--help` is answered before the command runs.
 *
 * @since 0.1.0
 * @category constants
 */
export const helpOption: OptionSpec = {
  long: "--help",
  short: Option.some("-h"),
  value: Option.none(),
  description: "Print this help",
  group: Option.none()
}

/** `N | adaptive` as `N|adaptive`: one word in the name column. */
const valueName = (value: string): string => value.replaceAll(" | ", "|")

const optionName = (option: OptionSpec): string =>
  `${Option.match(option.short, { onNone: () => "    ", onSome: (short) => `${short}, ` })}${option.long}` +
  Option.match(option.value, { onNone: () => "", onSome: (value) => ` ${valueName(value)}` })

/** The name column's width for these names. */
const widthOf = (names: ReadonlyArray<string>): number => Math.min(defaults.nameWidth, Math.max(0, ...names.map((name) => name.length)))

/** Rows of `name  description`, the descriptions in one column `width` from the names. */
const table = (
  rows: ReadonlyArray<readonly [name: string, description: string]>,
  width = widthOf(rows.map(([name]) => name))
): Array<string> =>
  rows.flatMap(([name, description]) => {
    if (description === "") return [`  ${name}`]
    return name.length > width
      ? [`  ${name}`, `  ${" ".repeat(width)}  ${description}`]
      : [`  ${name.padEnd(width)}  ${description}`]
  })

/** Prose in lines of at most `width` characters (a longer word has a line of its own). */
const wrap = (text: string, width: number): Array<string> => {
  const lines: Array<string> = []
  let line = ""
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else {
      line = line === "" ? word : `${line} ${word}`
    }
  }
  return line === "" ? lines : [...lines, line]
}

/** The first sentence of a description. */
const summary = (description: string): string => {
  const end = description.search(/\.(\s|$)/)
  return end === -1 ? description : description.slice(0, end)
}

const heading = (title: string, color: boolean) => (color ? `\x1b[1m${title}\x1b[0m` : title)

/** The options of a command in their groups, in the order each group first appears. */
const groups = (options: ReadonlyArray<OptionSpec>): Array<readonly [string, Array<OptionSpec>]> => {
  const byGroup = new Map<string, Array<OptionSpec>>()
  for (const option of options) {
    const group = Option.getOrElse(option.group, () => "Options")
    byGroup.set(group, [...(byGroup.get(group) ?? []), option])
  }
  return [...byGroup.entries()]
}

/**
 * The usage line of `command` invoked as `program`: `wiz run [options] [<input>]`.
 *
 * @since 0.1.0
 * @category rendering
 */
export const usage = (command: CommandSpec, program: string): string =>
  [
    program,
    ...(command.subcommands.length > 0 ? ["<command>"] : []),
    "[options]",
    ...command.args.map((arg) => `${arg.optional ? `[${arg.name}]` : arg.name}${arg.repeated ? "..." : ""}`)
  ].join(" ")

/**
 * The help of `command`, ending with a newline.
 *
 * @since 0.1.0
 * @category rendering
 */
export const render = (command: CommandSpec, options: RenderOptions): string => {
  const lines: Array<string> = []
  const h = (title: string) => heading(title, options.color)
  if (options.version !== undefined) lines.push(`${options.program} ${options.version}`)
  if (command.description !== "") lines.push(...wrap(command.description, defaults.textWidth))
  if (lines.length > 0) lines.push("")

  lines.push(`${h("Usage:")} ${usage(command, options.program)}`)

  if (command.subcommands.length > 0) {
    lines.push("", h("Commands:"), ...table([...command.subcommands].sort((a, b) => a.name.localeCompare(b.name)).map((sub) => [sub.name, summary(sub.description)])))
  }
  if (command.args.length > 0) {
    lines.push("", h("Arguments:"), ...table(command.args.map((arg) => [arg.name, arg.description])))
  }
  // the command's own groups, then the general options; one name column for all of them, so
  // the descriptions line up down the page
  const general = [...command.options.filter((o) => Option.isNone(o.group)), ...(options.extra ?? []), helpOption]
  const all = [...command.options.filter((o) => Option.isSome(o.group)), ...general]
  const width = widthOf(all.map(optionName))
  for (const [group, members] of groups(all)) {
    lines.push("", h(`${group}:`), ...table(members.map((option) => [optionName(option), option.description]), width))
  }
  if (command.subcommands.length > 0) lines.push("", `'${options.program} <command> --help' prints the options of a command.`)
  return lines.join("\n") + "\n"
}
