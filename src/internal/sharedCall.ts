/**
 * One effect run in a fiber of its own on behalf of the callers waiting for it, reference
 * counted: each waiter may leave on its own; when the last one leaves, the fiber is interrupted
 * (and that last waiter waits until it has stopped). `Coalesce` and `Debounce` are built on it.
 *
 * Cost: one `forkDaemon` for the call, one `Effect.async` registration per waiter, no `Deferred`.
 * The fiber is a daemon (a waiter leaving must not stop it), but it cannot outlive its waiters.
 *
 * @internal
 */
import { Effect, Fiber } from "effect"
import type { Exit } from "effect"

/** How a waiter took part: it started the call, or joined it. */
export type Role = "led" | "joined"

/** Turns the call's outcome into what one waiter returns. */
export type Done<A, E, X, Y> = (exit: Exit.Exit<A, E>, role: Role, callers: number) => Effect.Effect<X, Y>

/** The `restore` of an enclosing `Effect.uninterruptibleMask`. */
type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/** Wraps a joiner's wait for the call (e.g. to count the caller as asleep meanwhile). */
export type WhileJoined = <A, E>(wait: Effect.Effect<A, E>) => Effect.Effect<A, E>

/** Resumes one waiter with the call's outcome. */
type Resume<A, E> = (exit: Exit.Exit<A, E>, role: Role, callers: number) => void

export class SharedCall<A, E> {
  private fiber: Fiber.RuntimeFiber<A, E> | undefined = undefined
  private exit: Exit.Exit<A, E> | undefined = undefined
  /** Waiters still waiting. */
  private waiting = 0
  /** One slot per waiter in arrival order (the leader first); a waiter that left is `undefined`. */
  private readonly resumes: Array<Resume<A, E> | undefined> = []
  private ended = false

  /**
   * `onEnd` runs once, synchronously, when the call ends or when its last waiter leaves, before
   * anyone is resumed: the owner forgets the call there, so that a new caller starts afresh
   * rather than join a call that is over or being stopped.
   */
  constructor(private readonly onEnd: () => void) {}

  private end(): void {
    if (this.ended) return
    this.ended = true
    this.onEnd()
  }

  /**
   * Forks `effect` and waits for it as its first waiter. Call it inside
   * `Effect.uninterruptibleMask`, passing its `restore`: the fork and the registration of its
   * waiter must happen together.
   */
  lead<X, Y, R>(effect: Effect.Effect<A, E, R>, restore: Restore, done: Done<A, E, X, Y>): Effect.Effect<X, Y, R> {
    return Effect.flatMap(Effect.forkDaemon(restore(effect)), (fiber) => {
      this.fiber = fiber
      fiber.addObserver((exit) => {
        this.exit = exit
        this.end()
        const callers = this.waiting
        const resumes = this.resumes
        for (let i = 0; i < resumes.length; i++) resumes[i]?.(exit, i === 0 ? "led" : "joined", callers)
      })
      return this.join(restore, done)
    })
  }

  /**
   * Waits for the call's outcome; interrupting this waiter leaves the call to the others.
   * `whileJoined` wraps the wait of a waiter that joined a call already in flight.
   */
  join<X, Y>(restore: Restore, done: Done<A, E, X, Y>, whileJoined?: WhileJoined): Effect.Effect<X, Y> {
    const wait = Effect.async<X, Y>((resume) => {
      if (this.exit !== undefined) return resume(done(this.exit, "led", 1))
      const slot = this.resumes.push((exit, role, callers) => resume(done(exit, role, callers))) - 1
      this.waiting++
      // Runs only if this waiter is interrupted.
      return Effect.suspend(() => {
        this.resumes[slot] = undefined
        if (--this.waiting > 0 || this.exit !== undefined) return Effect.void
        this.end()
        return Fiber.interrupt(this.fiber!)
      })
    })
    return restore(whileJoined === undefined ? wait : whileJoined(wait))
  }
}
