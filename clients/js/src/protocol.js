// Signaling names and shapes every SDK module shares: the peer names of the SFU and of the
// server, the JSON signaling message, and `Signaling`, the part of the signaling connection a
// room and its peer connections use. `Client` (connection.js) is one; typing rooms and links
// against this view keeps them from importing the connection (no import cycle) and lets tests
// hand them a small fake.

/** The SFU's peer name in signaling. */
export const SFU_ID = '$sfu';
/** The server's name in SFU DataChannel envelopes. */
export const SERVER_ID = '$server';

/**
 * @typedef {{ type: string, [key: string]: any }} SignalMessage
 * @typedef {(...args: unknown[]) => void} Logger
 */

/**
 * What a Room and its links use of the signaling connection.
 * @typedef {object} Signaling
 * @property {(msg: SignalMessage) => void} send sends (relay messages are kept until confirmed)
 * @property {(event: string, fn: Function) => () => void} on subscribes; returns the unsubscribe
 * @property {() => void} close leaves and closes for good
 * @property {number} reconnects reconnection attempts so far
 * @property {SignalMessage|null} joined the last `joined` message
 * @property {{ log?: Logger }} options
 * @property {{ readyState: number }|null} ws the current socket (1 = open)
 */
