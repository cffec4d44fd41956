import { Command, Options } from "@effect/cli"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import * as Cli from "../../src/cli/Cli.js"
import * as CommandSpec from "../../src/cli/CommandSpec.js"
import * as Help from "../../src/cli/Help.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

const help = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const stdio = TestStdio.make()
    expect(yield* Wiz.exitCode(stdio, ...args)).toBe(0)
    return stdio.stdout()
  })

/** The group headings of a help text, in order. */
const headings = (text: string) => text.split("\n").filter((line) => /^[A-Z][^:]*:$/.test(line))

const filler = ["A user-defined piece of text", "This setting is optional", "A true or false value", "--wizard", "--log-level"]

describe("Help", () => {
  it.effect("issue 17.6: wiz run --help is a usage line and the options in groups, one line each, defaults shown, no filler", () =>
    Effect.gen(function*() {
      const text = yield* help("run", "--help")
      for (const words of filler) expect(text).not.toContain(words)
      expect(text).toContain("\nUsage: wiz run [options] [<input>]\n")
      expect(headings(text)).toEqual([
        "Arguments:",
        "Input and output:",
        "Flow control:",
        "Policies:",
        "Durable store:",
        "Model:",
        "Embedded model (the simulator):",
        "Options:"
      ])
      // every option on one line of its own (a name too wide for the column: its description on the next)
      const run = Cli.spec.subcommands.find((command) => command.name === "run")!
      const lines = text.split("\n")
      for (const option of run.options) {
        const at = lines.filter((line) => /^ {2}(-\w, | {4})--/.test(line) && line.slice(6).split(" ")[0] === option.long)
        expect([option.long, at.length]).toEqual([option.long, 1])
      }
      expect(text).toMatch(/\n {2}-o, --output FILE +Write the records to FILE instead of stdout\n/)
      expect(text).toMatch(/\n {6}--concurrency N\|adaptive +Model calls at once, or adaptive \(default 8\)\n/)
      expect(text).toMatch(/\n {6}--timeout DURATION +Time one attempt may take, e\.g\. 10s or 500ms \(default 30s\)\n/)
      expect(text).toMatch(/\n {6}--retries N +Retries after the first attempt \(default 3\)\n/)
      expect(text).toMatch(/\n {6}--model embedded\|openai-compatible\n {34}The simulator, or an OpenAI-compatible API \(default embedded\)\n/)
      // 280 lines before issue 17.6; a line per option since (the durable store and --redis added 11)
      expect(lines.length).toBeLessThan(70)
      expect(Math.max(...lines.map((line) => line.length))).toBeLessThanOrEqual(100)
    }))

  it.effect("issue 17.6: wiz --help lists the commands by their first sentence; wiz ask --help has its own options", () =>
    Effect.gen(function*() {
      const top = yield* help("--help")
      expect(top).toBe(
        [
          "wiz 0.1.0",
          "Run AI agent tasks with retries, a circuit breaker and concurrency limits.",
          "",
          "Usage: wiz <command> [options]",
          "",
          "Commands:",
          "  ask     Ask the model one question and stream the answer to stdout",
          "  run     Run a JSON Lines file of agent tasks; one JSON record per line as each finishes",
          "  serve   Serve an OpenAI-compatible API that answers through the agent's policies",
          "  status  Show a store's batches (tasks succeeded, failed, running, queued) and its workers",
          "  worker  Work on every batch of a PostgreSQL store until SIGTERM (then hand back, exit 0)",
          "",
          "Options:",
          "      --version            Print the version",
          "      --completions SHELL  Print a completion script for sh, bash, fish or zsh",
          "  -h, --help               Print this help",
          "",
          "'wiz <command> --help' prints the options of a command.",
          ""
        ].join("\n")
      )
      expect(yield* help()).toBe(top)
      const ask = yield* help("ask", "-h")
      for (const words of filler) expect(ask).not.toContain(words)
      expect(ask).toContain("\nUsage: wiz ask [options] <prompt>\n")
      expect(headings(ask)).toEqual(["Arguments:", "The answer:", "Policies:", "Flow control:", "Model:", "Embedded model (the simulator):", "Options:"])
      expect(ask).toMatch(/\n {6}--max-tokens N +The longest answer, in tokens \(default 256\)\n/)
      expect(ask).not.toContain("--resume")
    }))

  it.effect("issue 17.6: the README shows wiz run --help as it reads", () =>
    Effect.gen(function*() {
      const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8")
      expect(readme).toContain(`\n\`\`\`text\n${yield* help("run", "--help")}\`\`\`\n`)
    }))

  it("issue 17.6: a new subcommand gets its help from its definition alone", () => {
    const serve = Command.make("serve", {
      port: Options.integer("port").pipe(
        Options.withAlias("p"),
        Options.withPseudoName("PORT"),
        Options.withDescription(CommandSpec.grouped("Network", "Port to listen on (default 8080)")),
        Options.withDefault(8080)
      ),
      quiet: Options.boolean("quiet").pipe(Options.withDescription("Log nothing"))
    }, () => Effect.void).pipe(Command.withDescription("Serve the agent over HTTP."))
    const wiz = CommandSpec.fromCommand(Command.make("wiz").pipe(Command.withSubcommands([serve])))
    expect(Help.render(wiz.subcommands[0]!, { program: "wiz serve", color: false })).toBe(
      [
        "Serve the agent over HTTP.",
        "",
        "Usage: wiz serve [options]",
        "",
        "Network:",
        "  -p, --port PORT  Port to listen on (default 8080)",
        "",
        "Options:",
        "      --quiet      Log nothing",
        "  -h, --help       Print this help",
        ""
      ].join("\n")
    )
  })
})
