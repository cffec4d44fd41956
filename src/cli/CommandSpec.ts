/**
 * What a command's definition says, read back from the `@effect/cli` command itself: its name,
 * what it does, its arguments and its options (every name, the value it takes, what it is for,
 * and the group `--help` lists it under). {@link Help} renders `--help` from it and {@link Argv}
 * checks an argument vector against it, so a command gets both by being defined, and a new
 * subcommand of `wiz` gets them by being added to `Cli.command`.
 *
 * Read through `@effect/cli`'s public data (`CommandDescriptor.getUsage`, a `Usage` tree with
 * each option's names and accepted values; `CommandDescriptor.getHelp`, a `HelpDoc` with each
 * description), leaving out what `@effect/cli` adds to every option: the type sentence it puts
 * first ("A user-defined piece of text.") and the notes it puts last ("This setting is optional.").
 *
 * An option's group is the start of its description in brackets, written with {@link grouped}:
 * `Options.withDescription(CommandSpec.grouped("Model", "The model that answers"))`. An option
 * without one is listed under "Options".
 *
 * @example
 * ```ts
 * import { Command, Options } from "@effect/cli"
 * import { Effect } from "effect"
 * import * as CommandSpec from "wiz-effect/cli/CommandSpec"
 *
 * const serve = Command.make("serve", {
 *   port: Options.integer("port").pipe(Options.withDescription(CommandSpec.grouped("Network", "Port to listen on (default 8080)")))
 * }, () => Effect.void)
 * CommandSpec.fromCommand(serve).options[0]
 * // { long: "--port", short: none, value: some("integer"), description: "Port to listen on (default 8080)", group: "Network" }
 * ```
 *
 * @since 0.1.0
 */
import { CliConfig, type Command, type HelpDoc, type Usage } from "@effect/cli"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import type { Span } from "@effect/cli/HelpDoc/Span"
import { HashMap, Option } from "effect"

/**
 * An option of a command.
 *
 * @since 0.1.0
 * @category models
 */
export interface OptionSpec {
  /** `--output`. */
  readonly long: string
  /** `-o`, when it has one. */
  readonly short: Option.Option<string>
  /** What it takes (`FILE`, `N | adaptive`); none for a flag. */
  readonly value: Option.Option<string>
  readonly description: string
  /** The group `--help` lists it under; none for the general "Options". */
  readonly group: Option.Option<string>
}

/**
 * A positional argument of a command.
 *
 * @since 0.1.0
 * @category models
 */
export interface ArgSpec {
  /** `<input>`. */
  readonly name: string
  readonly optional: boolean
  /** It takes any number of values. */
  readonly repeated: boolean
  readonly description: string
}

/**
 * A command: its name, what it does, its arguments and options, and its subcommands.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommandSpec {
  readonly name: string
  /** The command's description; its first sentence is its summary in a list of commands. */
  readonly description: string
  readonly args: ReadonlyArray<ArgSpec>
  readonly options: ReadonlyArray<OptionSpec>
  readonly subcommands: ReadonlyArray<CommandSpec>
}

const GROUP = /^\[([^\]]+)\]\s*/

/**
 * A description that puts its option in `group` in `--help`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const grouped = (group: string, description: string): string => `[${group}] ${description}`

/** The text of a span, without its styles. */
const text = (span: Span): string => {
  switch (span._tag) {
    case "Text":
    case "URI":
      return span.value
    case "Sequence":
      return text(span.left) + text(span.right)
    default:
      return text(span.value)
  }
}

/** A help document as a flat list of its blocks, in order. */
const blocks = (doc: HelpDoc.HelpDoc): Array<Exclude<HelpDoc.HelpDoc, HelpDoc.Sequence | HelpDoc.Empty>> => {
  switch (doc._tag) {
    case "Empty":
      return []
    case "Sequence":
      return [...blocks(doc.left), ...blocks(doc.right)]
    default:
      return [doc]
  }
}

interface Named {
  readonly names: ReadonlyArray<string>
  readonly value: Option.Option<string>
  readonly optional: boolean
  readonly repeated: boolean
}

/** The named parts of a usage, in order, with whether each is optional or repeated. */
const named = (usage: Usage.Usage, optional = false, repeated = false): Array<Named> => {
  switch (usage._tag) {
    case "Named":
      return [{ names: usage.names, value: usage.acceptedValues, optional, repeated }]
    case "Optional":
      return named(usage.usage, true, repeated)
    case "Repeated":
      return named(usage.usage, optional, true)
    case "Alternation":
      return [...named(usage.left, true, repeated), ...named(usage.right, true, repeated)]
    case "Concat":
      return [...named(usage.left, optional, repeated), ...named(usage.right, optional, repeated)]
    default:
      return []
  }
}

/** The notes `@effect/cli` adds after a description: optional, repeated (the usage says both). */
const NOTE = /^This (setting is optional|(argument|option) (may|must) be repeated)/

/**
 * The description an option or argument was given: its help block without `@effect/cli`'s
 * type sentence (always its first paragraph) and the notes it adds after it.
 */
const described = (block: HelpDoc.HelpDoc): string =>
  blocks(block)
    .slice(1)
    .filter((doc) => doc._tag !== "Paragraph" || !NOTE.test(text(doc.value)))
    .map((doc) => (doc._tag === "Paragraph" || doc._tag === "Header" ? text(doc.value) : ""))
    .filter((line) => line !== "")
    .join(" ")

/** Each section of a command's help (`DESCRIPTION`, `ARGUMENTS`, `OPTIONS`) and its blocks. */
const sections = (doc: HelpDoc.HelpDoc): Map<string, Array<HelpDoc.HelpDoc>> => {
  const found = new Map<string, Array<HelpDoc.HelpDoc>>()
  let current: Array<HelpDoc.HelpDoc> | undefined
  for (const block of blocks(doc)) {
    if (block._tag === "Header" && block.level === 1) {
      current = []
      found.set(text(block.value), current)
    } else {
      current?.push(block)
    }
  }
  return found
}

/** The descriptions of a section's description lists, in order. */
const definitions = (section: ReadonlyArray<HelpDoc.HelpDoc> | undefined): Array<string> =>
  (section ?? []).flatMap((block) => (block._tag === "DescriptionList" ? block.definitions.map(([, doc]) => described(doc)) : []))

const config = CliConfig.make({ showBuiltIns: false })

/**
 * The spec of a command descriptor and, one level down, of its subcommands.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromDescriptor = (descriptor: Descriptor.Command<unknown>): CommandSpec => {
  const [self, ...parts] = named(Descriptor.getUsage(descriptor))
  const name = self?.names[0] ?? ""
  const help = sections(Descriptor.getHelp(descriptor, config))
  const optionParts = parts.filter((part) => part.names.some((n) => n.startsWith("-")))
  const argParts = parts.filter((part) => !part.names.some((n) => n.startsWith("-")))
  const optionHelp = definitions(help.get("OPTIONS"))
  const argHelp = definitions(help.get("ARGUMENTS"))
  const children = [...HashMap.entries(Descriptor.getSubcommands(descriptor))]
  const leaf = children.length === 1 && children[0]![0] === name
  return {
    name,
    description: (help.get("DESCRIPTION") ?? []).map((doc) => (doc._tag === "Paragraph" ? text(doc.value) : "")).join(" ").trim(),
    args: argParts.map((part, i) => ({
      name: part.names[0]!,
      optional: part.optional,
      repeated: part.repeated,
      description: argHelp[i] ?? ""
    })),
    options: optionParts.map((part, i) => {
      const full = optionHelp[i] ?? ""
      const group = GROUP.exec(full)
      return {
        long: part.names.find((n) => n.startsWith("--")) ?? part.names[0]!,
        short: Option.fromNullable(part.names.find((n) => /^-[^-]/.test(n))),
        value: part.value,
        description: group === null ? full : full.slice(group[0].length),
        group: Option.fromNullable(group?.[1])
      }
    }),
    subcommands: leaf ? [] : children.map(([, child]) => fromDescriptor(child))
  }
}

/**
 * The spec of a command and its subcommands.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromCommand = <Name extends string, R, E, A>(command: Command.Command<Name, R, E, A>): CommandSpec =>
  fromDescriptor(command.descriptor)

/**
 * The option of `spec` that `name` (`--output`, `-o`) names.
 *
 * @since 0.1.0
 * @category getters
 */
export const option = (spec: CommandSpec, name: string): Option.Option<OptionSpec> =>
  Option.fromNullable(spec.options.find((o) => o.long === name || Option.contains(o.short, name)))
