// Small fakes of the browser APIs the SDK uses, for the node unit tests in ../test/: a WebSocket
// the test plays the server for, RTCPeerConnection/RTCDataChannel that follow the offer/answer
// state machine, media tracks/senders, and a Signaling stand-in for rooms. Kept outside test/ so
// `node --test test/` does not run this file as a test.

import { Emitter } from '../src/emitter.js';

/**
 * A WebSocket class whose instances the test drives from the server side: `accept()`,
 * `deliver(msg)`, `drop(code)`. `sent` holds what the client sent, parsed.
 * Each call returns a fresh class with its own `instances`.
 */
export function fakeWebSocketClass() {
  return class FakeWebSocket {
    /** @type {FakeWebSocket[]} */
    static instances = [];
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeWebSocket.instances.push(this);
    }
    send(data) {
      if (this.readyState === 0) throw new Error('InvalidStateError: still connecting');
      if (this.readyState !== 1) return; // browsers drop sends on a closing socket
      this.sent.push(JSON.parse(data));
    }
    close(code = 1005, reason = '') {
      if (this.readyState >= 2) return;
      this.readyState = 2;
      this.closedWith = code;
      queueMicrotask(() => this._closed(code, reason));
    }
    // ---- the server side ----
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }
    refuse() {
      this.onerror?.({});
      this._closed(1006, '');
    }
    deliver(msg) {
      this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    }
    drop(code = 1006, reason = '') {
      this._closed(code, reason);
    }
    _closed(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    /** Sent messages of one type. */
    sentOf(type) {
      return this.sent.filter((m) => m.type === type);
    }
  };
}

/** An RTCDataChannel: `open()`, `receive(data)`, `drain()`, `closeNow()` drive it. */
export class FakeDataChannel extends EventTarget {
  constructor(label, init = {}) {
    super();
    this.label = label;
    this.init = init;
    this.readyState = 'connecting';
    this.bufferedAmount = 0;
    this.bufferedAmountLowThreshold = 0;
    this.binaryType = 'blob';
    this.sent = [];
    /** Bytes each send adds to bufferedAmount (to test backpressure). */
    this.bufferPerSend = 0;
    this.onopen = null;
    this.onmessage = null;
  }
  send(data) {
    if (this.readyState !== 'open') throw new Error('InvalidStateError: channel not open');
    this.sent.push(data);
    this.bufferedAmount += this.bufferPerSend;
  }
  open() {
    this.readyState = 'open';
    this.onopen?.(new Event('open'));
  }
  receive(data) {
    this.onmessage?.({ data });
  }
  drain(to = 0) {
    this.bufferedAmount = to;
    this.dispatchEvent(new Event('bufferedamountlow'));
  }
  closeNow() {
    this.readyState = 'closed';
    this.dispatchEvent(new Event('close'));
  }
  /** Text frames sent, parsed as JSON. */
  sentJson() {
    return this.sent.map((d) => JSON.parse(d));
  }
}

export class FakeSender {
  constructor(track) {
    this.track = track;
    this.replaced = [];
  }
  async replaceTrack(next) {
    this.track = next;
    this.replaced.push(next);
  }
}

let sdpCounter = 0;
const description = (type) => {
  const sdp = `${type}-${++sdpCounter}`;
  return { type, sdp, toJSON: () => ({ type, sdp }) };
};

/**
 * An RTCPeerConnection that follows the signaling state machine (an offer received in
 * have-local-offer is an implicit rollback) and records what the SDK does to it.
 */
export class FakePeerConnection {
  /** @type {FakePeerConnection[]} */
  static instances = [];
  /** When set, construction with a non-empty iceServers throws (as a bad TURN URL does). */
  static rejectIceServers = false;
  constructor(config = {}) {
    if (FakePeerConnection.rejectIceServers && config.iceServers?.length) throw new TypeError('bad ICE server URL');
    this.config = config;
    this.signalingState = 'stable';
    this.connectionState = 'new';
    this.iceConnectionState = 'new';
    this.localDescription = null;
    this.remoteDescription = null;
    this.channels = [];
    this.transceivers = [];
    this.candidates = [];
    this.removed = [];
    this.restarts = 0;
    this.rollbacks = 0;
    this.onnegotiationneeded = this.onicecandidate = this.onconnectionstatechange = null;
    this.ontrack = this.oniceconnectionstatechange = null;
    FakePeerConnection.instances.push(this);
  }
  createDataChannel(label, init) {
    const ch = new FakeDataChannel(label, init);
    this.channels.push(ch);
    return ch;
  }
  async setLocalDescription() {
    if (this.signalingState === 'have-remote-offer') {
      this.localDescription = description('answer');
      this.signalingState = 'stable';
    } else {
      this.localDescription = description('offer');
      this.signalingState = 'have-local-offer';
    }
  }
  async setRemoteDescription(desc) {
    if (desc.type === 'offer') {
      if (this.signalingState === 'have-local-offer') this.rollbacks++;
      this.signalingState = 'have-remote-offer';
    } else {
      if (this.signalingState !== 'have-local-offer') throw new Error('InvalidStateError: no local offer');
      this.signalingState = 'stable';
    }
    this.remoteDescription = desc;
  }
  async addIceCandidate(c) {
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.candidates.push(c);
  }
  addTrack(track, stream) {
    const sender = new FakeSender(track);
    this.transceivers.push({ mid: null, direction: 'sendrecv', stream, sender, receiver: { track: null } });
    return sender;
  }
  addTransceiver(track, init) {
    const t = { mid: null, direction: init.direction, init, sender: new FakeSender(track), receiver: { track: null } };
    this.transceivers.push(t);
    return t;
  }
  removeTrack(sender) {
    this.removed.push(sender);
  }
  getTransceivers() {
    return this.transceivers;
  }
  restartIce() {
    this.restarts++;
  }
  close() {
    this.signalingState = 'closed';
    this.connectionState = 'closed';
  }
  // ---- test drivers ----
  channel(label) {
    return this.channels.find((c) => c.label === label);
  }
  /** A down-track on `mid` (as the server's offer creates), firing `ontrack`. */
  remoteTrack(mid, track) {
    const t = { mid, direction: 'recvonly', sender: new FakeSender(null), receiver: { track } };
    this.transceivers.push(t);
    this.ontrack?.({ track, streams: [], transceiver: t });
    return t;
  }
  setIceState(s) {
    this.iceConnectionState = s;
    this.oniceconnectionstatechange?.();
  }
}

/** A MediaStreamTrack: kind, id, enabled, stop(), and 'ended' listeners. */
export class FakeTrack extends EventTarget {
  static n = 0;
  constructor(kind = 'video', label = '') {
    super();
    this.kind = kind;
    this.id = `${kind}-${++FakeTrack.n}`;
    this.label = label;
    this.enabled = true;
    this.readyState = 'live';
  }
  stop() {
    this.readyState = 'ended';
  }
  /** The browser ends the track (e.g. the "stop sharing" button). */
  end() {
    this.readyState = 'ended';
    this.dispatchEvent(new Event('ended'));
  }
}

/** A MediaStream holding tracks. */
export class FakeMediaStream extends EventTarget {
  constructor(tracks = []) {
    super();
    this.tracks = [...tracks];
  }
  addTrack(t) {
    if (!this.tracks.includes(t)) this.tracks.push(t);
  }
  removeTrack(t) {
    this.tracks = this.tracks.filter((x) => x !== t);
  }
  getTracks() {
    return [...this.tracks];
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === 'video');
  }
}

/** A stand-in for the Client as a Room sees it (the `Signaling` view): records what is sent. */
export class FakeSignaling extends Emitter {
  constructor() {
    super();
    this.sent = [];
    this.closes = 0;
    this.reconnects = 0;
    this.joined = null;
    this.options = {};
    this.ws = { readyState: 1 };
  }
  send(msg) {
    this.sent.push(msg);
  }
  close() {
    this.closes++;
  }
  sentOf(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

/**
 * A room as links see it (LinkHost + PeerHost + SfuHost), recording events and calls.
 */
export function fakeRoom({ iceServers = [] } = {}) {
  const events = [];
  const room = {
    client: new FakeSignaling(),
    iceServers,
    localStream: new FakeMediaStream(),
    publications: [],
    remoteTracks: new Map(),
    events,
    samples: [],
    ended: [],
    tried: [],
    progress: [],
    emit: (event, ...args) => events.push([event, ...args]),
    _endRemote: (key) => room.ended.push(key),
    _rttSample: (ms) => room.samples.push(ms),
    _sfuTryEmit: (mid) => room.tried.push(mid),
    _progress: (ev) => room.progress.push(ev),
    /** Events named `name`, without the name. */
    of: (name) => events.filter((e) => e[0] === name).map((e) => e.slice(1)),
  };
  return room;
}

/** Installs the fakes as browser globals for the duration of a test file. */
export function installGlobals() {
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.MediaStream = FakeMediaStream;
}

/** Lets pending promise callbacks (the links' signaling queues) run. */
export async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** Polls `cond` (real time) until it holds or `ms` pass. */
export async function until(cond, ms = 3000, what = 'condition') {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
