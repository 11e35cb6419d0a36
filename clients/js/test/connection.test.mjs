// connection.js (Client, connect) against a fake WebSocket the test plays the server for:
// the signaling URL, opening, relay messages numbered and held until the session is ready,
// duplicate `seq` dropped, resume (re-sending what the server did not confirm), falling back to
// getToken when the resume is refused, backoff, closing cleanly, and `client.stream()` loading
// stream.js beside it.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Client, MAX_OUTBOX, connect, signalUrl } from '../src/connection.js';
import { Room } from '../src/room.js';
import { fakeWebSocketClass, settle } from '../test-support/fakes.mjs';

/** A connected client; `ws` is its first socket, already open. */
async function open(opts = {}) {
  const WS = fakeWebSocketClass();
  const p = connect('https://sb.example', 'tok', { WebSocket: WS, ...opts });
  WS.instances[0].accept();
  const client = await p;
  return { WS, client, ws: WS.instances[0] };
}

const joined = (extra = {}) => ({ type: 'joined', peer_id: 'me', resume_token: 'rt1', mode: 'mesh', seq: 1, ...extra });
const offer = (i) => ({ type: 'offer', target: 'bob', offer: { type: 'offer', sdp: `o${i}` } });

/** Advances mocked time by `ms` and lets the reconnect loop run. */
async function advance(t, ms) {
  t.mock.timers.tick(ms);
  await settle();
}

test('signalUrl: http(s) becomes ws(s), and a bare host gets /v1/signal', () => {
  assert.equal(signalUrl('https://sb.example').href, 'wss://sb.example/v1/signal');
  assert.equal(signalUrl('http://127.0.0.1:7880/').href, 'ws://127.0.0.1:7880/v1/signal');
  assert.equal(signalUrl('ws://h:1').href, 'ws://h:1/v1/signal');
  assert.equal(signalUrl('wss://h/custom/path').href, 'wss://h/custom/path');
});

test('connect opens the socket with the access token and resolves once it is open', async () => {
  const { client, ws } = await open();
  assert.ok(client instanceof Client);
  assert.equal(ws.url.href, 'wss://sb.example/v1/signal?access_token=tok');
  assert.equal(client.ready, false); // attached only once `joined` arrives
});

test('connect rejects when the socket fails before opening, and does not retry', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const WS = fakeWebSocketClass();
  const p = connect('https://sb.example', 'tok', { WebSocket: WS, getToken: async () => 'x' });
  WS.instances[0].refuse();
  await assert.rejects(p, /signaling connection failed/);
  await advance(t, 10_000);
  assert.equal(WS.instances.length, 1);
});

test('relay messages are numbered and held until joined; others go out at once', async () => {
  const { client, ws } = await open();
  client.send(offer(1));
  client.send({ type: 'ice_candidate', target: 'bob', candidate: { candidate: 'c1' } });
  client.send({ type: 'join', room_id: 'r1' });
  assert.deepEqual(ws.sent.map((m) => m.type), ['join']);
  assert.deepEqual(client.outbox.map((e) => [e.n, e.msg.type, e.sent]), [[1, 'offer', false], [2, 'ice_candidate', false]]);
  ws.deliver(joined());
  assert.equal(client.ready, true);
  assert.deepEqual(ws.sent.map((m) => m.type), ['join', 'offer', 'ice_candidate']);
  client.send({ type: 'answer', target: 'bob', answer: {} });
  client.send({ type: 'bye', target: 'bob' });
  assert.deepEqual(client.outbox.map((e) => [e.n, e.msg.type, e.sent]),
    [[1, 'offer', true], [2, 'ice_candidate', true], [3, 'answer', true], [4, 'bye', true]]);
  assert.equal(ws.sent.length, 5);
});

test('the outbox keeps the newest MAX_OUTBOX relay messages', async () => {
  const { client, ws } = await open();
  for (let i = 1; i <= MAX_OUTBOX + 6; i++) client.send(offer(i));
  assert.equal(client.outbox.length, MAX_OUTBOX);
  assert.equal(client.outbox[0].n, 7);
  ws.deliver(joined());
  assert.equal(ws.sent.length, MAX_OUTBOX);
  assert.equal(ws.sent[0].offer.sdp, 'o7');
});

test('SFU-bound messages are not numbered, and wait for a ready session', async () => {
  const { client, ws } = await open();
  client.send({ type: 'offer', target: '$sfu', offer: {} });
  client.send({ type: 'subscribe', publisher: 'bob', video: false, max_layer: 0 });
  assert.equal(client.sentCount, 0);
  assert.equal(client.heldForSfu.length, 2);
  assert.equal(ws.sent.length, 0);
  ws.deliver(joined()); // a fresh session starts a fresh SFU connection: drop them
  assert.equal(client.heldForSfu.length, 0);
  assert.equal(ws.sent.length, 0);
  client.send({ type: 'ice_candidate', target: '$sfu', candidate: {} });
  assert.deepEqual(ws.sent.map((m) => [m.type, m.target]), [['ice_candidate', '$sfu']]);
  assert.equal(client.sentCount, 0);
});

test('messages: seq is tracked, duplicates and old seq are dropped, junk is ignored', async () => {
  const { client, ws } = await open();
  const seen = [];
  client.on('signal', (m) => seen.push(`${m.type}:${m.seq ?? '-'}`));
  ws.deliver(joined({ seq: 1 }));
  ws.deliver({ type: 'peer_joined', peer_id: 'bob', seq: 2 });
  ws.deliver({ type: 'peer_joined', peer_id: 'bob', seq: 2 });
  ws.deliver({ type: 'peer_left', peer_id: 'bob', seq: 1 });
  ws.deliver({ type: 'pong' }); // unnumbered
  ws.deliver('{not json');
  ws.onmessage({ data: new ArrayBuffer(3) });
  ws.deliver({ type: 'peer_left', peer_id: 'bob', seq: 3 });
  assert.deepEqual(seen, ['joined:1', 'peer_joined:2', 'pong:-', 'peer_left:3']);
  assert.equal(client.lastSeq, 3);
  assert.equal(client.joined.peer_id, 'me');
  assert.equal(client.resumeToken, 'rt1');
});

test('resume: reconnects with the resume token and last_seq, re-sends what the server did not get', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, client, ws } = await open();
  const events = [];
  client.on('disconnected', (code) => events.push(`disconnected:${code}`));
  client.on('resumed', (m) => events.push(`resumed:${m.received}`));
  ws.deliver(joined({ seq: 4 }));
  for (let i = 1; i <= 3; i++) client.send(offer(i));
  ws.drop(1006);
  assert.equal(client.ready, false);
  client.send(offer(4)); // while down: kept, not sent
  client.send({ type: 'answer', target: '$sfu', answer: {} }); // held for the SFU
  await advance(t, 199);
  assert.equal(WS.instances.length, 1, 'waits 200 ms before reconnecting');
  await advance(t, 1);
  assert.equal(WS.instances.length, 2);
  const ws2 = WS.instances[1];
  assert.equal(ws2.url.search, '?resume_token=rt1&last_seq=4');
  ws2.accept();
  await settle();
  // The server got offers 1 and 2 before the cut.
  ws2.deliver({ type: 'joined', peer_id: 'me', resume_token: 'rt2', resumed: true, received: 2, seq: 5 });
  assert.deepEqual(ws2.sent.map((m) => m.offer?.sdp ?? `${m.type}->${m.target}`), ['o3', 'o4', 'answer->$sfu']);
  assert.deepEqual(client.outbox.map((e) => e.n), [3, 4]);
  assert.equal(client.ready, true);
  assert.equal(client.resumeToken, 'rt2');
  assert.equal(client.reconnects, 1);
  assert.deepEqual(events, ['disconnected:1006', 'resumed:2']);
  // The session goes on: new relay messages continue the numbering.
  client.send(offer(5));
  assert.equal(client.outbox.at(-1).n, 5);
  assert.equal(ws2.sent.at(-1).offer.sdp, 'o5');
  await advance(t, 10_000);
  assert.equal(WS.instances.length, 2, 'no further reconnects');
  client.close();
});

test('a refused resume falls back to a fresh session from getToken and rejoins the room', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  let minted = 0;
  const { WS, client, ws } = await open({ getToken: async () => `fresh${++minted}` });
  const room = client.room('r1');
  const joinedP = room.join();
  ws.deliver(joined({ seq: 9 }));
  await joinedP;
  client.send(offer(1));
  ws.drop(1006);
  await advance(t, 200);
  const ws2 = WS.instances[1];
  assert.equal(ws2.url.search, '?resume_token=rt1&last_seq=9');
  ws2.accept();
  await settle();
  ws2.deliver({ type: 'error', code: 'resume_failed', message: 'unknown session' });
  ws2.drop(1008);
  const isFresh = (w) => w.url.searchParams.has('access_token') && w !== ws;
  for (let i = 0; i < 10 && !WS.instances.some(isFresh); i++) await advance(t, 100);
  const fresh = WS.instances.find(isFresh);
  assert.ok(fresh, 'a fresh session with a minted token');
  assert.equal(client.token, 'fresh1');
  assert.equal(client.lastSeq, 0);
  assert.deepEqual(client.outbox, []);
  assert.equal(client.sentCount, 0);
  fresh.accept();
  await settle();
  assert.deepEqual(fresh.sentOf('join'), [{ type: 'join', room_id: 'r1', sfu_capable: true }]);
  room.leave();
});

test('a refused resume opens exactly one fresh session', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  let minted = 0;
  const { WS, client, ws } = await open({ getToken: async () => `fresh${++minted}` });
  ws.deliver(joined());
  ws.drop(1006);
  await advance(t, 200);
  WS.instances[1].accept();
  await settle();
  WS.instances[1].drop(1008);
  for (let i = 0; i < 10; i++) await advance(t, 1000);
  assert.equal(minted, 1);
  client.close();
});

test('close() during the reconnect backoff stops the pending attempt', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, client, ws } = await open();
  ws.deliver(joined());
  ws.drop(1006);
  client.close();
  await advance(t, 1000);
  assert.equal(WS.instances.length, 1);
});

test('without getToken a lost session is reported as an error', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, client, ws } = await open();
  const errors = [];
  client.on('error', (e) => errors.push(e.message));
  ws.deliver(joined());
  ws.drop(1006);
  await advance(t, 200);
  WS.instances[1].accept();
  await settle();
  WS.instances[1].drop(1008);
  // A refused resume starts the fresh session at once, without another backoff.
  await settle();
  await advance(t, 0);
  assert.equal(errors[0], 'session lost and no getToken to start a new one');
  assert.equal(client.resumeToken, null);
});

test('close code 4001 (token rejected) skips the resume and starts afresh', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, ws } = await open({ getToken: async () => 'fresh' });
  ws.deliver(joined());
  ws.drop(4001);
  await advance(t, 200);
  assert.equal(WS.instances[1].url.search, '?access_token=fresh');
});

test('failed reconnects back off: 200, 400, 800 ms … up to 5 s', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const logged = [];
  const { WS, client, ws } = await open({ getToken: async () => 'fresh', log: (...a) => logged.push(a[0]) });
  ws.deliver(joined());
  ws.drop(1006);
  const at = [];
  let now = 0;
  for (let step = 0; step < 170; step++) {
    await advance(t, 100);
    now += 100;
    while (WS.instances.length - 1 > at.length) {
      at.push(now);
      WS.instances.at(-1).refuse();
      await settle();
    }
  }
  assert.deepEqual(at, [200, 600, 1400, 3000, 6200, 11200, 16200]);
  assert.equal(client.reconnects, at.length);
  assert.equal(logged[0], 'reconnect failed');
  client.close();
});

test('reconnect: false leaves a dropped connection down', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, client, ws } = await open({ reconnect: false });
  ws.deliver(joined());
  ws.drop(1006);
  await advance(t, 10_000);
  assert.equal(WS.instances.length, 1);
  assert.equal(client.ready, false);
});

test('close says leave, closes with 1000 and does not reconnect', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  const { WS, client, ws } = await open({ getToken: async () => 'fresh' });
  const room = client.room('r1');
  room.join();
  ws.deliver(joined());
  let closedPeers = 0;
  room._closePeers = () => { closedPeers++; };
  const disconnected = [];
  client.on('disconnected', (code) => disconnected.push(code));
  client.close();
  assert.equal(closedPeers, 1);
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  assert.equal(ws.closedWith, 1000);
  await settle();
  assert.deepEqual(disconnected, [1000]);
  await advance(t, 10_000);
  assert.equal(WS.instances.length, 1);
  clearInterval(room._timer);
});

test('room(): one room per connection', async () => {
  const { client } = await open();
  const room = client.room('r1');
  assert.ok(room instanceof Room);
  assert.equal(room.client, client);
  assert.equal(client.room('r1'), room);
  assert.throws(() => client.room('r2'), /one room per connection/);
});

test('messages reach the room after the client has seen them', async () => {
  const { client, ws } = await open();
  const room = client.room('r1');
  const order = [];
  client.on('signal', (m) => order.push(`client:${m.type}`));
  room.on('peer_joined', (id) => order.push(`room:${id}`));
  ws.deliver({ type: 'peer_joined', peer_id: 'bob', seq: 1 });
  assert.deepEqual(order, ['client:peer_joined', 'room:bob']);
});

test('stream() loads ./stream.js and calls the gateway on the same host over https', async (t) => {
  const { client } = await open();
  const calls = [];
  t.mock.method(globalThis, 'fetch', async (url, init) => {
    calls.push([url, init.headers.authorization]);
    throw new Error('offline');
  });
  await assert.rejects(client.stream('task-1', 'payload'), /offline/);
  assert.deepEqual(calls, [['https://sb.example/inference.Inference/StreamPredict', 'Bearer tok']]);
});

test('several servers: connect skips one that cannot be reached', async () => {
  const WS = fakeWebSocketClass();
  const p = connect(['https://a.example', 'https://b.example'], 'tok', { WebSocket: WS });
  WS.instances[0].refuse();
  await settle();
  assert.equal(WS.instances.length, 2);
  assert.equal(WS.instances[1].url.href, 'wss://b.example/v1/signal?access_token=tok');
  WS.instances[1].accept();
  const client = await p;
  assert.equal(client.url.host, 'b.example');
});

test('a cluster: joined.nodes are learned, and a resume goes to the next node when this one is down', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, client, ws } = await open();
  ws.deliver(joined({ seq: 3, nodes: [
    { id: 'a', url: 'https://sb.example' },
    { id: 'b', url: 'https://n2.example' },
    { id: 'c', url: 'https://n3.example' },
    7,
    { id: 'd' },
    null,
    'https://not-a-node-object.example',
  ] }));
  assert.deepEqual(client.urls.map((u) => u.host), ['sb.example', 'n2.example', 'n3.example']);
  ws.drop(1006);
  await advance(t, 200);
  assert.equal(WS.instances.length, 2);
  assert.equal(WS.instances[1].url.host, 'sb.example', 'the same node first');
  WS.instances[1].refuse();
  await settle();
  await advance(t, 99);
  assert.equal(WS.instances.length, 2);
  await advance(t, 1);
  const ws3 = WS.instances[2];
  assert.equal(ws3.url.href, 'wss://n2.example/v1/signal?resume_token=rt1&last_seq=3', 'the next node, 100 ms later');
  ws3.accept();
  await settle();
  ws3.deliver({ type: 'joined', peer_id: 'me', resume_token: 'rt2', resumed: true, received: 0, seq: 4, nodes: [{ id: 'b', url: 'https://n2.example' }, { id: 'c', url: 'https://n3.example' }] });
  assert.equal(client.ready, true);
  assert.deepEqual(client.urls.map((u) => u.host), ['n2.example', 'n3.example', 'sb.example']);
  client.close();
});

test('a draining server names another node: the session resumes there', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { WS, client, ws } = await open();
  ws.deliver(joined({ seq: 2 }));
  ws.deliver({ type: 'reconnect', url: 'https://n2.example', reason: 'drain' });
  ws.drop(1001);
  await advance(t, 200);
  assert.equal(WS.instances[1].url.href, 'wss://n2.example/v1/signal?resume_token=rt1&last_seq=2');
  client.close();
});

test('a message sent again after a failover (same relay_id from the same peer) is dropped', async () => {
  const { client, ws } = await open();
  const got = [];
  client.on('signal', (m) => got.push(m.offer?.sdp ?? m.type));
  ws.deliver(joined());
  ws.deliver({ type: 'offer', from: 'bob', relay_id: 'n1~x.7', offer: { sdp: 'a' }, seq: 2 });
  ws.deliver({ type: 'offer', from: 'bob', relay_id: 'n1~x.7', offer: { sdp: 'a' }, seq: 3 });
  ws.deliver({ type: 'offer', from: 'carol', relay_id: 'n1~x.7', offer: { sdp: 'b' }, seq: 4 });
  ws.deliver({ type: 'offer', from: 'bob', relay_id: 'n1~x.8', offer: { sdp: 'c' }, seq: 5 });
  ws.deliver({ type: 'offer', from: 'bob', offer: { sdp: 'd' }, seq: 6 });
  // The SFU's track messages carry a media `mid`, repeated on purpose: never dropped.
  ws.deliver({ type: 'track_added', from: '$sfu', mid: '1', publisher: 'bob', seq: 7 });
  ws.deliver({ type: 'track_ended', from: '$sfu', mid: '1', seq: 8 });
  assert.deepEqual(got, ['joined', 'a', 'b', 'c', 'd', 'track_added', 'track_ended']);
  assert.equal(client.lastSeq, 8);
});
