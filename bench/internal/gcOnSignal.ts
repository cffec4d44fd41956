/**
 * Preloaded into a `wiz serve` child process by `bench/gateway.ts` (`--import`, with
 * `--expose-gc`): on SIGUSR2 it collects garbage at once, then writes `gc` to standard error,
 * so a memory reading after it counts what is live, not what the runs before it left.
 */
process.on("SIGUSR2", () => {
  ;(globalThis as { gc?: () => void }).gc?.()
  process.stderr.write("gc\n")
})
