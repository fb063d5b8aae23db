// Types for the liveshard danmaku SDK (src/index.mjs, dist/liveshard.cjs).
// The wire format is docs/protocol.md in the liveshard repository.

export declare const CLOSE: {
  NORMAL: 1000;
  GOING_AWAY: 1001;
  PROTOCOL_ERROR: 1002;
  ABNORMAL: 1006;
  INVALID_DATA: 1007;
  SLOW_CONSUMER: 1008;
  TOO_BIG: 1009;
  TRY_AGAIN_LATER: 1013;
  KICKED: 4001;
  BANNED: 4003;
  HEARTBEAT_TIMEOUT: 4008;
  TOKEN_REVOKED: 4011;
};

/** Close codes after which the client does not reconnect: kicked, banned, token revoked. */
export declare const TERMINAL_CLOSE_CODES: number[];

/** Server error codes by name: 4290 → 'rate_limited', … */
export declare const ERROR_NAMES: Record<number, string>;

export type SdkErrorCode = 'timeout' | 'disconnected' | 'queue_full' | 'closed' | 'send_failed';

export declare class LiveshardError extends Error {
  /** The server's error code (4290, …) or the SDK's own. */
  code: number | SdkErrorCode;
  /** ERROR_NAMES[code] for server codes ('unknown' if not listed), else the code itself. */
  reason: string;
  cid?: string;
}

// --- what the server sends ---

interface ItemBase {
  /** Strictly increasing per room. */
  id: number;
  room: string;
  uid?: string;
  nick?: string;
  /** Server time, ms since the epoch. */
  ts: number;
  /** The stream time (ms) the item was accepted at, while the room is live. */
  media_ts?: number;
}
export interface DanmakuItem extends ItemBase {
  type: 'danmaku';
  text: string;
  color: string;
  mode: 'scroll' | 'top' | 'bottom';
}
export interface GiftItem extends ItemBase {
  type: 'gift';
  gift_id: string;
  count: number;
}
export interface LikeItem extends ItemBase {
  type: 'like';
  count: number;
}
export interface SystemItem extends ItemBase {
  type: 'system';
  text: string;
}
export interface LiveItem extends ItemBase {
  type: 'live';
  status: 'live' | 'offline';
}
export type RoomItem = DanmakuItem | GiftItem | LikeItem | SystemItem | LiveItem;

export interface PrivateMessage {
  type: 'pm';
  id: number;
  room: string;
  from: string;
  nick: string;
  to: string;
  text: string;
  ts: number;
}
export interface Online {
  type: 'online';
  room: string;
  count: number;
}
/** History no longer holds the resume point: items from `first` on are what the server has. */
export interface Gap {
  type: 'gap';
  room?: string;
  [field: string]: unknown;
}
export interface Ack {
  type: 'ack';
  cid: string;
  /** The id the room gave the post (absent for moderation acks). */
  id?: number;
}

export interface ItemMeta {
  /** True for items from the replay sent on join. */
  history: boolean;
}

export interface ClientEvents {
  open: { room: string; since: number | null };
  close: { code: number; reason: string; willReconnect: boolean };
  reconnecting: { attempt: number; delay: number; code: number };
  history: { room: string; items: RoomItem[] };
  online: Online;
  pm: PrivateMessage;
  gap: Gap;
  error: LiveshardError;
  authed: { type: 'authed'; uid: string };
  pong: { rtt: number; serverTs: number };
  message: { type: string; [field: string]: unknown };
}
export interface ItemEvents {
  item: RoomItem;
  danmaku: DanmakuItem;
  gift: GiftItem;
  like: LikeItem;
  system: SystemItem;
  live: LiveItem;
}

// --- transports ---

export interface TransportHandlers {
  onOpen(): void;
  onMessage(data: string | ArrayBuffer): void;
  onClose(code?: number, reason?: string): void;
  onError(err: unknown): void;
}
export interface TransportSocket {
  send(text: string, done: (err: unknown | null) => void): void;
  close(code: number, reason: string): void;
}
export interface Transport {
  name: string;
  open(url: string, handlers: TransportHandlers): TransportSocket;
}

/** The part of WeChat's `wx` the SDK uses. */
export interface WxLike {
  connectSocket(opts: { url: string; fail?: (e: unknown) => void }): {
    onOpen(cb: (r?: unknown) => void): void;
    onMessage(cb: (r: { data: string | ArrayBuffer }) => void): void;
    onClose(cb: (r: { code: number; reason: string }) => void): void;
    onError(cb: (e: unknown) => void): void;
    send(opts: { data: string; success?: () => void; fail?: (e: unknown) => void }): void;
    close(opts: { code?: number; reason?: string }): void;
  };
}

export declare function wxTransport(wx: WxLike): Transport;
export declare function webSocketTransport(ctor: new (url: string) => WebSocket): Transport;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(t: unknown): void;
  now(): number;
}

export interface ClientOptions {
  /** `ws(s)://HOST/ws` or a room's `ws_url`; a function is asked on every attempt. */
  url: string | ((ctx: { attempt: number }) => string | Promise<string>);
  /** The room id; else the `room` parameter of the URL. */
  room?: string;
  /** A login token; a function is asked on every attempt (refresh it there). Omit to read anonymously. */
  token?: string | null | (() => string | null | Promise<string | null>);
  /** WeChat's wx (default: the global `wx` when there is one). */
  wx?: WxLike;
  /** A WebSocket constructor (default: the global `WebSocket`). */
  WebSocket?: new (url: string) => WebSocket;
  /** A transport of your own (tests, other runtimes). */
  transport?: Transport;
  /** Backoff: base·2^attempt ms capped at max, minus up to `jitter` of it at random. */
  reconnect?: { base?: number; max?: number; jitter?: number; maxAttempts?: number };
  /** App-level ping every `interval` ms (default: the server's `heartbeat_ms` from the history frame, 30 s until then); no pong within `timeout` ms → reconnect. */
  heartbeat?: { interval?: number; timeout?: number };
  /** ms to wait for a socket to open (default 10000). */
  connectTimeout?: number;
  /** ms to wait for an ack (default 10000). */
  ackTimeout?: number;
  /** Sends kept while disconnected (default 50); past it, send rejects with 'queue_full'. */
  maxOutbox?: number;
  /** Resume from this item id on the first connect. */
  since?: number;
  timers?: Timers;
  random?: () => number;
}

export interface SendOptions {
  timeout?: number;
}

export declare class LiveshardClient {
  constructor(opts: ClientOptions);
  readonly state: 'idle' | 'connecting' | 'open' | 'waiting' | 'closed';
  readonly stats: { duplicates: number; reconnects: number };
  connect(): this;
  close(code?: number, reason?: string): void;
  /** The last room item id seen (default: the client's room). */
  lastId(room?: string): number;

  on<K extends keyof ItemEvents>(type: K, fn: (item: ItemEvents[K], meta: ItemMeta) => void): () => void;
  on<K extends keyof ClientEvents>(type: K, fn: (e: ClientEvents[K]) => void): () => void;
  once<K extends keyof ItemEvents>(type: K, fn: (item: ItemEvents[K], meta: ItemMeta) => void): () => void;
  once<K extends keyof ClientEvents>(type: K, fn: (e: ClientEvents[K]) => void): () => void;
  off(type: string, fn: (...args: any[]) => void): void;

  send(type: string, fields?: Record<string, unknown>, opts?: SendOptions): Promise<Ack>;
  sendDanmaku(text: string, style?: { color?: string; mode?: 'scroll' | 'top' | 'bottom' }, opts?: SendOptions): Promise<Ack>;
  sendGift(giftId: string, count?: number, opts?: SendOptions): Promise<Ack>;
  sendLike(count?: number, opts?: SendOptions): Promise<Ack>;
  sendPm(to: string, text: string, opts?: SendOptions): Promise<Ack>;
  mute(uid: string, seconds?: number, opts?: SendOptions): Promise<Ack>;
  unmute(uid: string, opts?: SendOptions): Promise<Ack>;
  ban(uid: string, opts?: SendOptions): Promise<Ack>;
  unban(uid: string, opts?: SendOptions): Promise<Ack>;
  kick(uid: string, opts?: SendOptions): Promise<Ack>;
  slowMode(seconds: number, opts?: SendOptions): Promise<Ack>;
}

/** `new LiveshardClient(opts).connect()` */
export declare function connect(opts: ClientOptions): LiveshardClient;

export declare function backoffDelay(
  attempt: number,
  opts?: { base?: number; max?: number; jitter?: number },
  random?: () => number,
): number;
export declare function withParams(url: string, params: Record<string, string | number | null | undefined>): string;

export interface HoldQueueOptions<T> {
  /** The player's current stream time in ms, or null while unknown. */
  clock: () => number | null | undefined;
  onRelease: (item: T) => void;
  /** Longest wall-clock hold (default 10000 ms). */
  maxHoldMs?: number;
  /** Most items held (default 200); past it the oldest is released early. */
  cap?: number;
  timers?: Timers;
}

export declare class HoldQueue<T extends { media_ts?: number } = RoomItem> {
  constructor(opts: HoldQueueOptions<T>);
  readonly size: number;
  /** Items released early because of the cap. */
  releasedEarly: number;
  push(item: T): void;
  tick(): void;
  start(intervalMs?: number): this;
  stop(): void;
  flush(): void;
  clear(): void;
}

/** A HoldQueue clock over a player; `detach()` stops listening to it. */
export interface MediaClock {
  (): number | null;
  detach(): void;
}

/** The stream time (ms) an HLS segment's EXTINF title `t=<ms>` names, or null. */
export declare function segmentStreamTime(title: string | null | undefined): number | null;

/** HLS through hls.js: `playingDate − epoch`, the epoch read from the playing fragment. */
export declare function hlsMediaClock(hls: {
  on(event: string, fn: (event: string, data: any) => void): void;
  off(event: string, fn: (event: string, data: any) => void): void;
  readonly playingDate: Date | null;
}): MediaClock;

/** HTTP-FLV through mpegts.js or flv.js: `onStreamTime.start + video.currentTime × 1000`. */
export declare function flvMediaClock(
  player: { on(event: string, fn: (data: any) => void): void; off(event: string, fn: (data: any) => void): void },
  video: { readonly currentTime: number },
): MediaClock;
