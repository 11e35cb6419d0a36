/** Tiny event emitter. */
export class Emitter {
    /** @type {Map<string, Set<Function>>} */
    _handlers: Map<string, Set<Function>>;
    /**
     * @param {string} event
     * @param {Function} fn
     * @returns {() => void} unsubscribe
     */
    on(event: string, fn: Function): () => void;
    /**
     * @param {string} event
     * @param {...unknown} args
     */
    emit(event: string, ...args: unknown[]): void;
}
