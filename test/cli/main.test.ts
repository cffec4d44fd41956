/**
 * The `wiz` executable end to end: a child process on real files, pipes, terminals and
 * signals (issue 7, "the CLI must never lose or corrupt data").
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { spawnSync } from "node:child_process"
import * as Process from "./Process.js"
import * as Screen from "./Screen.js"

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

/** An output where the first half of `n` tasks succeeded and the second half failed. */
const mixedOutput = (n: number) =>
  ids(n).map((id, i) =>
    JSON.stringify(
      i < n / 2
        ? { id, status: "succeeded", output: "x", attempts: 1, model: "embedded", degraded: false, durationMs: 1 }
        : { id, status: "failed", error: { _tag: "Overloaded", message: "embedded: overloaded" }, attempts: 4, durationMs: 9 }
    )
  ).join("\n") + "\n"

// Each run starts Node.js on the bundled CLI (~0.4 s of CPU): generous limits for a busy machine.
describe("wiz (the executable)", { timeout: 180_000 }, () => {
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

  it.live("issue 7.1: the input as output, by any name or redirection, is a usage error before anything is opened", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        const input = tasks(5)
        yield* fs.writeFileString(`${dir}/t.jsonl`, input)
        const run = yield* Process.bash(
          [
            "ln -s t.jsonl sym.jsonl",
            `wiz run t.jsonl -o t.jsonl ${instant}; echo "same name: $?"`,
            `wiz run ./t.jsonl -o sym.jsonl --resume ${instant}; echo "symbolic link: $?"`,
            `wiz run - -o t.jsonl ${instant} < t.jsonl; echo "stdin: $?"`,
            `wiz run t.jsonl ${instant} >> t.jsonl; echo "stdout: $?"`
          ].join("\n"),
          { cwd: dir }
        )
        expect(run.stdout).toBe("same name: 2\nsymbolic link: 2\nstdin: 2\nstdout: 2\n")
        expect(run.stderr).toBe(
          [
            'wiz: the output "t.jsonl" is the input "t.jsonl", one file',
            'wiz: the output "sym.jsonl" is the input "./t.jsonl", one file',
            'wiz: the output "t.jsonl" is the input (stdin), one file',
            'wiz: standard output is the input "t.jsonl", one file'
          ].map((line) => `${line}: writing the records would destroy the tasks; write them to another file\n`).join("")
        )
        expect(yield* fs.readFileString(`${dir}/t.jsonl`)).toBe(input)
      })
    ))

  it.live("issue 7.3: --resume after a crash tore the last line: cut off, and the file is JSON Lines again", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(10))
        const done = ids(4).map((id) => JSON.stringify({ id, status: "succeeded", output: "x", attempts: 1, model: "embedded", degraded: false, durationMs: 1 }))
        const torn = JSON.stringify({ id: "t005", status: "succeeded", output: "a long answer" }).slice(0, 30)
        yield* fs.writeFileString(`${dir}/out.jsonl`, done.join("\n") + "\n" + torn)
        const corrupt = `${done[0]}\n{"id":"t002","sta\n${done[2]}\n`
        yield* fs.writeFileString(`${dir}/corrupt.jsonl`, corrupt)
        const run = yield* Process.bash(
          [
            `wiz run t.jsonl -o out.jsonl --resume ${instant}; echo "torn: $?"`,
            `wiz run t.jsonl -o corrupt.jsonl --resume ${instant}; echo "corrupt: $?"`
          ].join("\n"),
          { cwd: dir }
        )
        expect(run.stdout).toBe("torn: 0\ncorrupt: 1\n")
        expect(run.stderr).toContain('wiz: the last line of "out.jsonl" (line 5, 30 bytes) is a record cut short by a crash')
        const out = yield* fs.readFileString(`${dir}/out.jsonl`)
        // every line parses, and every task has exactly one record
        expect(records(out).map((r) => r.id).sort()).toEqual(ids(10))
        expect(out.startsWith(done.join("\n") + "\n")).toBe(true)
        expect(run.stderr).toContain('wiz: output "corrupt.jsonl" line 2 is not a record (not valid JSON)')
        expect(yield* fs.readFileString(`${dir}/corrupt.jsonl`)).toBe(corrupt)
      })
    ))

  it.live("issue 7.7: --retry-failed runs the failed tasks again and leaves exactly one record per task", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(20))
        yield* fs.writeFileString(`${dir}/out.jsonl`, mixedOutput(20))
        const run = yield* Process.wiz(["run", "t.jsonl", "-o", "out.jsonl", "--retry-failed", ...Process.instant], { cwd: dir })
        expect(run.code).toBe(0)
        expect(run.stderr).toContain("succeeded   10\nfailed      0\ninvalid     0\nskipped     10 (already in the output)\n")
        const after = records(yield* fs.readFileString(`${dir}/out.jsonl`))
        expect(after.map((r) => r.id).sort()).toEqual(ids(20))
        expect(after.every((r) => r.status === "succeeded")).toBe(true)
        expect(yield* fs.readDirectory(dir)).toEqual(expect.not.arrayContaining([expect.stringContaining("wiz-tmp")]))
      })
    ))

  it.live("issue 7.7: kill -9 in the middle of --retry-failed leaves the old output byte for byte", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(20))
        const before = mixedOutput(20)
        yield* fs.writeFileString(`${dir}/out.jsonl`, before)
        yield* Effect.scoped(Effect.gen(function*() {
          const wiz = yield* Process.startWiz(
            ["run", "t.jsonl", "-o", "out.jsonl", "--retry-failed", "--concurrency", "1", "--time-to-first-token", "200ms", "--no-progress"],
            { cwd: dir }
          )
          // midway: the new file holds the kept records and at least one new one
          const temp = `${dir}/out.jsonl.wiz-tmp-${wiz.child.pid}`
          yield* Effect.suspend(() => fs.readFileString(temp)).pipe(
            Effect.filterOrFail((text) => text.split("\n").length > 12),
            Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("60 seconds")))
          )
          wiz.child.kill("SIGKILL")
          expect((yield* wiz.exited()).signal).toBe("SIGKILL")
        }))
        expect(yield* fs.readFileString(`${dir}/out.jsonl`)).toBe(before)
      })
    ))

  it.live("issue 7.5: a closed stdout or a failing write ends the run non-zero; the summary counts only records written", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(5))
        const run = yield* Process.bash(
          [`wiz run t.jsonl ${instant} >&-; echo "closed: $?" >&2`, `wiz run t.jsonl ${instant} > /dev/full; echo "full: $?" >&2`]
            .join("\n"),
          { cwd: dir }
        )
        const [closed, full] = run.stderr.split(/(?<=closed: \d+\n)/)
        expect(closed).toBe(
          "wiz: cannot write output on stdout: standard output is closed, so every record would be lost; give --output FILE, " +
            "or redirect stdout (-o /dev/null if the records are really not wanted)\nclosed: 1\n"
        )
        expect(full).toContain("succeeded   0\nfailed      0\ninvalid     0\n")
        expect(full).toMatch(/wiz: cannot write output on stdout: .*ENOSPC.*\nfull: 1\n$/)
      })
    ))

  it.live("issue 7.6: SIGTERM exits 143 with the summary so far and the command that continues; that command finishes the run", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(20))
        const slow = ["--concurrency", "1", "--time-to-first-token", "150ms", "--per-token", "0", "--no-progress"]
        const stopped = yield* Effect.scoped(Effect.gen(function*() {
          const wiz = yield* Process.startWiz(["run", "t.jsonl", "-o", "out.jsonl", ...slow], { cwd: dir })
          yield* Effect.suspend(() => fs.readFileString(`${dir}/out.jsonl`)).pipe(
            Effect.filterOrFail((text) => records(text).length >= 2),
            Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("60 seconds")))
          )
          wiz.child.kill("SIGTERM")
          return yield* wiz.exited()
        }))
        expect(stopped.code).toBe(143)
        const written = records(yield* fs.readFileString(`${dir}/out.jsonl`))
        expect(written.length).toBeLessThan(20)
        expect(stopped.stderr).toContain(`succeeded   ${written.length}\nfailed      0\n`)
        expect(stopped.stderr).toContain(
          "wiz: interrupted; what is done is in out.jsonl. To continue, run:\n" +
            `  wiz run t.jsonl -o out.jsonl ${slow.join(" ")} --resume\n`
        )
        const resumed = yield* Process.wiz(["run", "t.jsonl", "--output", "out.jsonl", "--resume", ...Process.instant], { cwd: dir })
        expect(resumed.code).toBe(0)
        expect(resumed.stderr).toContain(`succeeded   ${20 - written.length}\n`)
        expect(records(yield* fs.readFileString(`${dir}/out.jsonl`)).map((r) => r.id).sort()).toEqual(ids(20))
      })
    ))

  it.live("issue 7.6: SIGINT exits 130; the summary counts exactly the records on stdout", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(20))
        const stopped = yield* Effect.scoped(Effect.gen(function*() {
          const wiz = yield* Process.startWiz(
            ["run", "t.jsonl", "--concurrency", "2", "--time-to-first-token", "150ms", "--no-progress"],
            { cwd: dir }
          )
          yield* wiz.until((stdout) => records(stdout).length >= 2)
          wiz.child.kill("SIGINT")
          return yield* wiz.exited()
        }))
        expect(stopped.code).toBe(130)
        expect(stopped.stderr).toContain(`succeeded   ${records(stopped.stdout).length}\n`)
        expect(stopped.stderr).toContain(
          "wiz: interrupted; the records so far went to stdout. To continue, keep them in a file and run:\n" +
            "  wiz run t.jsonl --concurrency 2 --time-to-first-token 150ms --no-progress --output FILE --resume\n"
        )
      })
    ))

  // util-linux `script` gives the child a pseudo-terminal for both stdout and stderr
  it.live.skipIf(spawnSync("script", ["--version"]).status !== 0)(
    "issue 7.4: on a terminal with no -o, the progress line and the records never share a row",
    () =>
      withTempDir((dir, fs) =>
        Effect.gen(function*() {
          yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(15))
          const command = '"$WIZ_NODE" "$WIZ_MAIN" run t.jsonl --concurrency 3 --time-to-first-token 150ms'
          const run = yield* Process.bash(`script -qefc '${command}' /dev/null`, { cwd: dir, env: { COLUMNS: "200" } })
          expect(run.code).toBe(0)
          const rows = Screen.rows(run.stdout)
          const recordRows = rows.filter((row) => row.includes('{"id"'))
          expect(recordRows.map((row) => JSON.parse(row).id).sort()).toEqual(ids(15))
          // the progress line was drawn (a bar), and is the row just above the summary
          const summaryAt = rows.findIndex((row) => row.startsWith("succeeded "))
          expect(rows[summaryAt - 1]).toMatch(/^\[█{20}\] 15\/15, 0 failed, 0 retries, 0 calling, 0 waiting, [\d.]+\/s, ETA 0s$/)
          expect(run.stdout).toContain("\r\x1b[K{")
        })
      )
  )

  it.live("-o and --events to a process substitution (a pipe: no offset, no fsync) or /dev/null; wiz ask on a pipe", () =>
    withTempDir((dir, fs) =>
      Effect.gen(function*() {
        yield* fs.writeFileString(`${dir}/t.jsonl`, tasks(20))
        const run = yield* Process.bash(
          [
            `wiz run t.jsonl -o >(cat > out.jsonl) --events >(cat > events.jsonl) --coalesce ${instant} || echo "FAILED sub $?" >&2`,
            `wiz run t.jsonl -o /dev/null --events /dev/null ${instant} || echo "FAILED null $?" >&2`,
            `wiz ask "Summarise: a pipe has no offset." --time-to-first-token 0 --per-token 0 | cat > answer.txt || echo "FAILED ask $?" >&2`
          ].join("\n"),
          { cwd: dir }
        )
        expect(run.stderr).not.toContain("FAILED")
        expect(run.stderr).not.toMatch(/ESPIPE|EINVAL/)
        // the readers of the substitutions may finish after the script
        const complete = (path: string, n: number) =>
          fs.readFileString(`${dir}/${path}`).pipe(
            Effect.filterOrFail((text) => text.split("\n").filter((line) => line !== "").length >= n),
            Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("10 seconds")))
          )
        expect(records(yield* complete("out.jsonl", 20)).map((r) => r.id).sort()).toEqual(ids(20))
        const events = records(yield* complete("events.jsonl", 40))
        expect(events.filter((event) => event._tag === "TaskFinished")).toHaveLength(20)
        const answer = yield* fs.readFileString(`${dir}/answer.txt`)
        expect(answer.length).toBeGreaterThan(10)
        expect(answer.endsWith("\n")).toBe(true)
        expect(answer).not.toContain("\x1b")
      })
    ))

  it.live("issue 7.10: --help on a pipe prints no ANSI escapes and the usage line wiz run", () =>
    withTempDir((dir) =>
      Effect.gen(function*() {
        const help = yield* Process.wiz(["run", "--help"], { cwd: dir })
        expect(help.code).toBe(0)
        expect(help.stdout).toContain("\nUsage: wiz run [options] [<input>]\n")
        expect(help.stdout).not.toContain("\x1b")
      })
    ))
})
