// The tiny event emitter behind Client and Room: handlers per event name, `on` returns the
// unsubscribe function, and a throwing handler is logged without stopping the others.

/** Tiny event emitter. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }
  /**
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void} unsubscribe
   */
  on(event, fn) {
    let set = this._handlers.get(event);
    if (!set) this._handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => set?.delete(fn);
  }
  /**
   * @param {string} event
   * @param {...unknown} args
   */
  emit(event, ...args) {
    for (const fn of this._handlers.get(event) ?? []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`switchboard: ${event} handler failed`, e);
      }
    }
  }
}
