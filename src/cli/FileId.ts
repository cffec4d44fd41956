/**
 * The identity of a file: its device and inode. Two paths name one file exactly when their
 * ids are equal, whatever the names look like: a symbolic link, a hard link, `./x` and `x`,
 * `/dev/stdin` and the file the shell redirected into it. `wiz run` compares the ids of its
 * input and output before it opens either, so it never truncates the file it is about to read.
 * Only files that hold data have an id here (regular files and FIFOs): a terminal or
 * `/dev/null` may well be both stdin and stdout.
 *
 * @example
 * ```ts
 * import { Effect, Option } from "effect"
 * import * as FileId from "wiz-effect/cli/FileId"
 *
 * const same = Effect.map(
 *   Effect.all([FileId.ofPath("tasks.jsonl"), FileId.ofPath("./link-to-tasks.jsonl")]),
 *   ([a, b]) => FileId.same(a, b)
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Option } from "effect"
import { fstatSync, type Stats } from "node:fs"
import { stat } from "node:fs/promises"

/**
 * A file's device and inode.
 *
 * @since 0.1.0
 * @category models
 */
export interface FileId {
  readonly dev: number
  readonly ino: number
}

const of = (stats: Stats): Option.Option<FileId> =>
  stats.isFile() || stats.isFIFO() ? Option.some({ dev: stats.dev, ino: stats.ino }) : Option.none()

/**
 * The file a path names, following symbolic links; none when nothing is there (an output
 * that does not exist yet), when it is not a regular file or a FIFO, or when it cannot be
 * looked at (the open that follows says why).
 *
 * @since 0.1.0
 * @category constructors
 */
export const ofPath = (path: string): Effect.Effect<Option.Option<FileId>> =>
  Effect.promise(() => stat(path).then(of, () => Option.none<FileId>()))

/**
 * The file behind an open descriptor of this process (0 for stdin, 1 for stdout); none when
 * it is not open, or not a regular file or a FIFO.
 *
 * @since 0.1.0
 * @category constructors
 */
export const ofDescriptor = (fd: number): Option.Option<FileId> => {
  try {
    return of(fstatSync(fd))
  } catch {
    return Option.none()
  }
}

/**
 * Whether two ids, both known, name one file.
 *
 * @since 0.1.0
 * @category predicates
 */
export const same = (a: Option.Option<FileId>, b: Option.Option<FileId>): boolean =>
  Option.isSome(a) && Option.isSome(b) && a.value.dev === b.value.dev && a.value.ino === b.value.ino
