/**
 * A `Schema.Class` instance without running its constructor, for data the library has just
 * built itself on a hot path. The constructor copies its argument, deletes and re-adds a tag,
 * walks every field for a default and only then assigns them (~1–3 µs per object even with
 * validation off, bench/lean.ts); an instance is nothing but the class's prototype and those
 * own fields. `props` must hold every field, defaults (a tagged class's `_tag`) included, in
 * the constructor's order, so the result is equal to, and encodes like, the constructed one
 * (pinned by test/agent/AgentService.test.ts).
 *
 * @internal
 */

/** @internal */
export const unsafeConstruct = <A extends object>(
  klass: abstract new(...args: ReadonlyArray<never>) => A,
  props: NoInfer<{ readonly [K in keyof A]: A[K] }>
): A => Object.assign(Object.create(klass.prototype) as A, props)
