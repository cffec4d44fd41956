import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as Argv from "../../src/cli/Argv.js"
import * as Cli from "../../src/cli/Cli.js"
import * as TestStdio from "./TestStdio.js"
import * as Wiz from "./Wiz.js"

/** `wiz <args>` on empty stdin: its exit code and what it said on stderr. */
const refused = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const stdio = TestStdio.make({ stdin: "" })
    const code = yield* Wiz.exitCode(stdio, ...args)
    return [code, stdio.stderr()] as const
  })

const parse = (...args: ReadonlyArray<string>) => Argv.parse(Cli.spec, args, Cli.topOptions)

describe("Argv", () => {
  it.effect("issue 17.6: a misspelt or misplaced option is named, with the nearest real one; the value after it is not blamed", () =>
    Effect.gen(function*() {
      expect(yield* refused("run", "-", "--max-tokens", "8")).toEqual([
        2,
        "wiz: --max-tokens is an option of wiz ask, not of wiz run (wiz run --help lists its options)\n"
      ])
      expect(yield* refused("run", "--concurency", "3")).toEqual([
        2,
        "wiz: unknown option --concurency; did you mean --concurrency? (wiz run --help lists its options)\n"
      ])
      expect(yield* refused("run", "--outpt", "x.jsonl", "-")).toEqual([
        2,
        "wiz: unknown option --outpt; did you mean --output? (wiz run --help lists its options)\n"
      ])
      // once taken for the input file
      expect(yield* refused("run", "--resum")).toEqual([
        2,
        "wiz: unknown option --resum; did you mean --resume? (wiz run --help lists its options)\n"
      ])
      expect(yield* refused("ask", "hi", "--contine")).toEqual([
        2,
        "wiz: unknown option --contine; did you mean --continue? (wiz ask --help lists its options)\n"
      ])
      // @effect/cli's built-ins that wiz does not offer
      expect(yield* refused("run", "--wizard")).toEqual([2, "wiz: unknown option --wizard (wiz run --help lists its options)\n"])
      expect(yield* refused("rn", "t.jsonl")).toEqual([
        2,
        "wiz: unknown command rn; did you mean run? (wiz --help lists the commands)\n"
      ])
    }))

  it.effect("issue 17.6: an option given no value says it needs one, not \"unknown argument '-o'\"", () =>
    Effect.gen(function*() {
      expect(yield* refused("run", "-o")).toEqual([2, "wiz: -o (--output) needs a value: -o FILE\n"])
      expect(yield* refused("run", "t.jsonl", "--output")).toEqual([2, "wiz: --output needs a value: --output FILE\n"])
      expect(yield* refused("run", "-o", "--resume", "t.jsonl")).toEqual([
        2,
        "wiz: -o (--output) needs a value: -o FILE (got the option --resume instead)\n"
      ])
      expect(yield* refused("run", "--concurrency")).toEqual([2, "wiz: --concurrency needs a value: --concurrency N|adaptive\n"])
    }))

  it.effect("issue 17.6: a value the option refuses, a missing or an extra argument, each named", () =>
    Effect.gen(function*() {
      expect(yield* refused("run", "--model", "gpt", "-")).toEqual([2, 'wiz: --model: "gpt" is not embedded or openai-compatible\n'])
      expect(yield* refused("ask")).toEqual([2, "wiz: missing <prompt> (usage: wiz ask [options] <prompt>)\n"])
      expect(yield* refused("run", "a.jsonl", "b.jsonl")).toEqual([
        2,
        "wiz: unexpected argument b.jsonl (usage: wiz run [options] [<input>])\n"
      ])
    }))

  it("options first, then --, then the arguments: a lone - is the input wherever it is, unless it is an option's value", () => {
    const run = (...args: ReadonlyArray<string>) => Either.right({ _tag: "Run", args })
    expect(parse("run", "-", "-o", "x")).toEqual(run("run", "-o", "x", "--", "-"))
    expect(parse("run", "--resume", "-", "--no-progress")).toEqual(run("run", "--resume", "--no-progress", "--", "-"))
    expect(parse("run", "-o", "-", "t.jsonl")).toEqual(run("run", "-o", "-", "--", "t.jsonl"))
    expect(parse("run", "--output=x", "-", "--seed", "-1")).toEqual(run("run", "--output=x", "--seed", "-1", "--", "-"))
    expect(parse("run", "t.jsonl", "--", "-o")).toEqual(Either.left(expect.anything()))
    expect(parse("run", "--", "-o")).toEqual(run("run", "--", "-o"))
    expect(parse("run", "--coalesce", "-", "--events", "e.jsonl")).toEqual(run("run", "--coalesce", "--events", "e.jsonl", "--", "-"))
    expect(parse("run", "--memo-ttl", "-", "x")).toEqual(run("run", "--memo-ttl", "-", "--", "x"))
    expect(parse("--version")).toEqual(run("--version"))
  })

  it("-h or --help anywhere before -- asks for the help of the command it follows", () => {
    const help = (...path: ReadonlyArray<string>) => Either.right({ _tag: "Help", path })
    expect(parse()).toEqual(help())
    expect(parse("--help")).toEqual(help())
    expect(parse("run", "t.jsonl", "--help")).toEqual(help("run"))
    expect(parse("run", "--concurency", "3", "-h")).toEqual(help("run"))
    expect(parse("ask", "what?", "--continue", "--help")).toEqual(help("ask"))
    expect(parse("ask", "--", "--help")).toEqual(Either.right({ _tag: "Run", args: ["ask", "--", "--help"] }))
  })

  it("shellCommand quotes what a shell would split or expand", () => {
    expect(Argv.shellCommand(["wiz", "run", "my tasks.jsonl", "--base-url", "http://h:1/v1", "it's", "$HOME"])).toBe(
      "wiz run 'my tasks.jsonl' --base-url http://h:1/v1 'it'\\''s' '$HOME'"
    )
  })
})
