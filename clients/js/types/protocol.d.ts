/** The SFU's peer name in signaling. */
export const SFU_ID: "$sfu";
/** The server's name in SFU DataChannel envelopes. */
export const SERVER_ID: "$server";
export type SignalMessage = {
    type: string;
    [key: string]: any;
};
export type Logger = (...args: unknown[]) => void;
/**
 * What a Room and its links use of the signaling connection.
 */
export type Signaling = {
    /**
     * sends (relay messages are kept until confirmed)
     */
    send: (msg: SignalMessage) => void;
    /**
     * subscribes; returns the unsubscribe
     */
    on: (event: string, fn: Function) => () => void;
    /**
     * leaves and closes for good
     */
    close: () => void;
    /**
     * reconnection attempts so far
     */
    reconnects: number;
    /**
     * the last `joined` message
     */
    joined: SignalMessage | null;
    options: {
        log?: Logger;
    };
    /**
     * the current socket (1 = open)
     */
    ws: {
        readyState: number;
    } | null;
};
