/**
 * Preloaded into a `wiz` child process by `bench/hostile.ts` (`--import`): when the process
 * exits, writes its peak resident set size (`process.resourceUsage().maxRSS`, in KiB) to the
 * file `WIZ_BENCH_RSS_FILE` names. The kernel's own high-water mark, so no peak between two
 * samples is missed.
 */
import { writeFileSync } from "node:fs"

const file = process.env["WIZ_BENCH_RSS_FILE"]
if (file !== undefined) {
  process.on("exit", () => writeFileSync(file, String(process.resourceUsage().maxRSS)))
}
