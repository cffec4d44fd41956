import { Args, Command, Options } from "@effect/cli"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as CommandSpec from "../../src/cli/CommandSpec.js"

/** A subcommand as another helper would write it: plain `@effect/cli`, one option grouped. */
const serve = Command.make("serve", {
  port: Options.integer("port").pipe(
    Options.withAlias("p"),
    Options.withDescription(CommandSpec.grouped("Network", "Port to listen on (default 8080)")),
    Options.withDefault(8080)
  ),
  mode: Options.choice("mode", ["fast", "safe"]).pipe(Options.withDescription("How to serve"), Options.optional),
  verbose: Options.boolean("verbose"),
  dirs: Args.directory({ name: "dir" }).pipe(Args.withDescription("Directories to serve"), Args.repeated)
}, () => Effect.void).pipe(Command.withDescription("Serve the agent over HTTP. It listens until stopped."))

describe("CommandSpec", () => {
  it("issue 17.6: a command's options, arguments and groups are read from its definition, without @effect/cli's filler", () => {
    const root = CommandSpec.fromCommand(Command.make("wiz").pipe(Command.withSubcommands([serve])))
    expect(root.name).toBe("wiz")
    const spec = root.subcommands[0]!
    expect(spec.name).toBe("serve")
    expect(spec.description).toBe("Serve the agent over HTTP. It listens until stopped.")
    expect(spec.subcommands).toEqual([])
    expect(spec.options).toEqual([
      {
        long: "--port",
        short: Option.some("-p"),
        value: Option.some("integer"),
        description: "Port to listen on (default 8080)",
        group: Option.some("Network")
      },
      { long: "--mode", short: Option.none(), value: Option.some("fast | safe"), description: "How to serve", group: Option.none() },
      { long: "--verbose", short: Option.none(), value: Option.none(), description: "", group: Option.none() }
    ])
    expect(spec.args).toEqual([{ name: "<dir>", optional: false, repeated: true, description: "Directories to serve" }])
    expect(CommandSpec.option(spec, "-p")).toEqual(Option.some(spec.options[0]))
    expect(CommandSpec.option(spec, "--port=1")).toEqual(Option.none())
  })
})
