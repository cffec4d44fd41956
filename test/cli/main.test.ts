/**
 * The `wiz` executable end to end: a child process on real files, pipes, terminals and
 * signals (issue 7, "the CLI must never lose or corrupt data").
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Process from "./Process.js"

const withTempDir = <A, E, R>(f: (dir: string, fs: FileSystem.FileSystem) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped(), fs)
  }).pipe(Effect.scoped, Effect.provide(NodeContext.layer))

const task = (id: string) => `{"id":"${id}","prompt":"Summarise ticket ${id} about retries."}`
const ids = (n: number, prefix = "t") => Array.from({ length: n }, (_, i) => `${prefix}${String(i + 1).padStart(3, "0")}`)
const tasks = (n: number, prefix = "t") => ids(n, prefix).map(task).join("\n") + "\n"

const records = (text: string): Array<Record<string, unknown>> =>
  text.split("\n").filter((line) => line.length > 0).map((line) => JSON.parse(line) as Record<string, unknown>)

const instant = Process.instant.join(" ")

describe("wiz (the executable)", () => {
  it.live("issue 7.2: a process substitution, /dev/stdin on a pipe and a FIFO are read like -, once", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(20))
        const run = yield* Process.bash(
          [
            `wiz run <(cat t.jsonl) -o sub.jsonl ${instant} || echo "FAILED sub $?" >&2`,
            `cat t.jsonl | wiz run /dev/stdin -o dev-stdin.jsonl ${instant} || echo "FAILED dev-stdin $?" >&2`,
            `mkfifo fifo && { cat t.jsonl > fifo & }`,
            `wiz run fifo -o fifo.jsonl ${instant} || echo "FAILED fifo $?" >&2`,
            "wait"
          ].join("\n"),
          { cwd: dir }
        )
        expect(run.stderr).not.toContain("FAILED")
        expect(run.stderr).not.toContain("ESPIPE")
        for (const out of ["sub.jsonl", "dev-stdin.jsonl", "fifo.jsonl"]) {
          const written = records(yield* fs.readFileString(`${dir}/${out}`))
          expect([out, written.map((r) => r.id).sort()]).toEqual([out, ids(20)])
        }
      })
    ))

  it.live("issue 7.2: the output is not truncated until the input has been opened", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const keep = Array.from({ length: 50 }, (_, i) => JSON.stringify({ id: `k${i}`, status: "succeeded" })).join("\n") + "\n"
        yield* fs.writeFileString(`${dir}/keep.out`, keep)
        yield* fs.makeDirectory(`${dir}/a-directory`)
        const run = yield* Process.bash(
          [`wiz run missing.jsonl -o keep.out ${instant}; echo "exit $?"`, `wiz run a-directory -o keep.out ${instant}; echo "exit $?"`]
            .join("\n"),
          { cwd: dir }
        )
        expect(run.stdout).toBe("exit 1\nexit 1\n")
        expect(run.stderr).toContain("wiz: cannot read input \"missing.jsonl\": ENOENT: no such file or directory")
        expect(run.stderr).toContain("wiz: cannot read input \"a-directory\": is a directory")
        expect(yield* fs.readFileString(`${dir}/keep.out`)).toBe(keep)
      })
    ))

  it.live("issue 7.10: --help on a pipe prints no ANSI escapes and the usage line $ wiz run", () =>
    withTempDir((dir) =>
      Effect.gen(function*() {
        const help = yield* Process.wiz(["run", "--help"], { cwd: dir })
        expect(help.code).toBe(0)
        expect(help.stdout).toContain("\n$ wiz run [(-o, --output FILE)]")
        expect(help.stdout).not.toContain("\x1b")
      })
    ))
})
