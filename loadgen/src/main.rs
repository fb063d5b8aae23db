//! `loadgen`: the load generator for liveshard (SPEC C12). Glue only: the command line, then
//! either the parent (orchestrates worker processes, merges, reports) or a worker.
//!
//! Crate map:
//! - `plan.rs`      — raw flags → validated plan; what each worker and executor owns
//! - `parent/`      — spawns `--procs` workers, the start barrier, progress line, the report
//!   (`results.rs`: the merged counts made into the report's results)
//! - `worker.rs`    — one worker process: glommio executors, counters, the stdin/stdout protocol
//! - `conn.rs`      — WebSocket connection drivers on glommio: connect, viewer, publisher
//! - `media.rs`     — media viewer drivers on glommio: HTTP-FLV and RTMP play, TTFF, stalls
//! - `hls.rs`       — the HLS poller driver on glommio: one keep-alive connection per viewer
//! - `hlsplayer.rs` — sans-IO HLS player: what to fetch next, plain or low-latency, stalls
//! - `hlsproto/`    — sans-IO HTTP/1.1 responses for polling, the m3u8 parser, playlist URIs
//! - `hlsreport.rs` — what hls-viewers reports: latency ingest → received, reload hold times
//! - `wsproto.rs`   — sans-IO WebSocket client codec (upgrade, masked frames, frame parser)
//! - `flvproto.rs`  — sans-IO HTTP-FLV: response head, chunked coding, FLV tag scanner
//! - `rtmpproto.rs` — sans-IO RTMP play client: handshake, chunk stream, commands, acks
//! - `amf0.rs`      — the AMF0 values the RTMP client writes and reads
//! - `marker.rs`    — latency markers written by publishers and scanned by viewers
//! - `token.rs`     — HS256 tokens for publishers
//! - `urls.rs`      — target URLs resolved once, the `--src` address range
//! - `local.rs`     — one executor's shared state (counters, histograms, sockets), the wall clock
//! - `report.rs`    — report types, summaries, machine facts
//! - `hist.rs`      — latency histograms: wire form, merging, percentiles
//! - `timeline.rs`  — per-interval figures of the measurement window, from workers' progress
//! - `html.rs`      — the `--html` page: figures, charts and the histogram as inline SVG
//! - `probe.rs`     — what loadgen reads from the server side: `/metrics`, `/proc/PID`
//!
//! Why glommio and not the server's monoio: a runtime bug must not hide on both sides of a
//! measurement (SPEC C12).

mod amf0;
mod conn;
mod flvproto;
mod hist;
mod hls;
mod hlsplayer;
mod hlsproto;
mod hlsreport;
mod html;
mod local;
mod marker;
mod media;
mod parent;
mod plan;
mod probe;
mod report;
mod rtmpproto;
mod timeline;
mod token;
mod urls;
mod worker;
mod wsproto;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for liveshard: WebSocket fan-out latency, idle-connection memory, \
             HTTP-FLV, RTMP and HLS viewers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N viewers over R rooms, P publishers posting at a total rate; end-to-end latency,
    /// deliveries/s, frames/s, connect failures, disconnects, server drops.
    WsFanout(FanoutArgs),
    /// N idle (heartbeating) viewers; the server's RSS growth per connection.
    WsIdle(IdleArgs),
    /// N HTTP-FLV viewers of one stream: time to first frame and keyframe, throughput,
    /// stalls, connect failures, disconnects, server CPU per delivered Gbit/s.
    FlvViewers(MediaArgs),
    /// N RTMP play viewers of one stream: the same numbers as flv-viewers.
    RtmpViewers(MediaArgs),
    /// N HLS players of one stream, each polling its media playlist over one keep-alive
    /// connection (--ll: Low-Latency HLS parts and blocking reloads): ingest → received
    /// latency per segment or part, reload hold times, throughput, stalls, server CPU.
    HlsViewers(HlsArgs),
    /// Internal: one worker process (reads its plan on stdin, reports on stdout).
    #[command(hide = true)]
    Worker,
}

/// Options every scenario takes.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Source addresses, round robin per connection: one address or a range such as
    /// 127.0.0.2-127.0.0.60 (each address has its own ~28k ephemeral ports).
    #[arg(long, value_name = "IP[-IP]")]
    pub src: Option<String>,
    /// Worker processes, each taking a slice of the connections (a process may hold at most
    /// its RLIMIT_NOFILE descriptors: 20,000 on these machines).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub procs: usize,
    /// glommio executors (threads) per worker process.
    #[arg(long, default_value_t = 1, value_name = "T")]
    pub threads: usize,
    /// Pin each executor to its own CPU (worker k, executor t → CPU (k*T+t) mod cores).
    #[arg(long)]
    pub pin: bool,
    /// Write the full report (config, machine, results, merged histogram) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page (figures, deliveries and latency
    /// over time, the latency histogram; inline SVG, viewable offline).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// The server's process id: its CPU time (fan-out, media) and RSS (idle, media) are read
    /// from /proc. Media scenarios add the process's descendants (nginx workers).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Connections opened per second over all workers (default: as fast as possible, at
    /// most 64 handshakes in flight per executor).
    #[arg(long, value_name = "CONNS_PER_SEC")]
    pub ramp: Option<f64>,
    /// Give up on one connection's connect + handshake (WebSocket upgrade, HTTP response
    /// head, RTMP play start) after this long.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// Allow a target that is not a loopback address; the address must be given here too,
    /// exactly as the URL resolves.
    #[arg(long, value_name = "IP")]
    pub allow_remote: Option<std::net::IpAddr>,
    /// No live progress line even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of the WebSocket scenarios.
#[derive(Args, Clone, Debug)]
pub struct WsArgs {
    /// WebSocket URL of the server, e.g. ws://127.0.0.1:8080/ws (rooms and tokens are added
    /// as query parameters). ws-fanout takes several (repeat --url, or separate them with
    /// commas), for nodes of one cluster: viewers are spread over them round robin within
    /// each room, publishers all connect to the first, and the report gives deliveries and
    /// latency per URL besides the totals.
    #[arg(long, required = true, value_delimiter = ',', value_name = "URL")]
    pub url: Vec<String>,
    /// Room ids are PREFIX0 … PREFIX{R-1}.
    #[arg(long, default_value = "lg", value_name = "PREFIX")]
    pub room_prefix: String,
    /// Application heartbeat: each viewer sends {"type":"ping"} this often.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub heartbeat: u64,
}

#[derive(Args, Clone, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub ws: WsArgs,
    /// Rooms the viewers and publishers are spread over (round robin).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Viewer connections (read only).
    #[arg(long)]
    pub viewers: usize,
    /// Publisher connections (logged in; they post danmaku).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second over all publishers, paced evenly.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: f64,
    /// Seconds of publishing (the measurement window).
    #[arg(long, value_name = "SECS")]
    pub duration: f64,
    /// Bytes of danmaku text per message (the marker padded with 'x'); liveshard accepts
    /// danmaku.max_text_chars (default 100).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload: usize,
    /// Seconds to keep reading after the last send, for deliveries still in flight.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub drain: f64,
    /// Sign publisher tokens with this HS256 secret (liveshard's auth.jwt_secret or
    /// DATA_DIR/jwt.secret).
    #[arg(long, value_name = "S", conflicts_with = "tokens")]
    pub token_secret: Option<String>,
    /// Publisher tokens, one per line, used round robin.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Issuer claim for signed tokens (liveshard's auth.jwt_issuer).
    #[arg(long, default_value = "liveshard")]
    pub token_issuer: String,
    /// Prometheus endpoint to read liveshard_ws_messages_dropped_total from (default: the
    /// (first) ws URL's host with /metrics; "none" to skip).
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub ws: WsArgs,
    /// Idle viewer connections.
    #[arg(long)]
    pub conns: usize,
    /// Rooms the viewers are spread over.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Seconds to hold the connections after the measurement.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub hold: f64,
    /// Seconds to wait after the last connection is up before reading the server's RSS.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub settle: f64,
}

#[derive(Args, Clone, Debug)]
pub struct MediaArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The stream: http://HOST:PORT/APP/STREAM.flv for flv-viewers (a query, e.g. a play
    /// signature, is sent as given), rtmp://HOST[:PORT]/APP/STREAM[?QUERY] for rtmp-viewers,
    /// http://HOST:PORT/APP/STREAM.m3u8 for hls-viewers (a query is sent with every request:
    /// with the playlist's, and with each URI in it that has none of its own).
    #[arg(long)]
    pub url: String,
    /// Viewer connections.
    #[arg(long)]
    pub viewers: usize,
    /// Seconds of measurement once every viewer has connected (throughput, stalls and server
    /// CPU are taken over this window; time to first frame over the connect phase).
    #[arg(long, value_name = "SECS")]
    pub duration: f64,
    /// A gap between consecutive tags longer than this is a stall (hls-viewers: no new
    /// segment or part for 3 × the playlist's target duration, whatever this says).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub stall_ms: u64,
    /// A viewer counts as held only if it also received at least this many kbit/s over the
    /// window. Set it a little under the stream's bitrate to count the viewers a server fell
    /// behind for (a throttled publisher slows everyone without any gap). 0: no such check.
    #[arg(long, default_value_t = 0, value_name = "KBPS")]
    pub min_kbps: u64,
    /// Prometheus endpoint to read liveshard's liveshard_media_* counters from (default for
    /// flv-viewers: the URL's host with /metrics; for rtmp-viewers: none; "none" to skip).
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct HlsArgs {
    #[command(flatten)]
    pub media: MediaArgs,
    /// Play as a Low-Latency HLS player: start at the latest independent part, then
    /// blocking reloads (_HLS_msn/_HLS_part) and every new part, in order. Latency is taken
    /// per part (plain: per segment).
    #[arg(long)]
    pub ll: bool,
    /// With --ll: do not fetch the preload-hinted part (by default each viewer fetches it
    /// when it is the next part it wants; the server answers once the part is complete).
    #[arg(long)]
    pub no_hints: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::WsFanout(args) => plan::fanout(args).and_then(parent::run),
        Command::WsIdle(args) => plan::idle(args).and_then(parent::run),
        Command::FlvViewers(args) => {
            plan::media(args, plan::Scenario::FlvViewers).and_then(parent::run)
        }
        Command::RtmpViewers(args) => {
            plan::media(args, plan::Scenario::RtmpViewers).and_then(parent::run)
        }
        Command::HlsViewers(args) => plan::hls(args).and_then(parent::run),
        Command::Worker => return worker::main(),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            ExitCode::from(2)
        }
    }
}
