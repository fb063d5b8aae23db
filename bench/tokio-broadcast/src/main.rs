//! A per-room WebSocket broadcast server written the way a Rust developer would reach for
//! first: tokio's multi-threaded runtime, one task per connection, tokio-tungstenite, and a
//! `tokio::sync::broadcast` channel per room. It is the honest baseline `bench/fanout.sh`
//! compares liveshard with, speaking the same minimal protocol:
//!
//! - `GET /ws?room=R[&token=T]` upgrades (the token is accepted and not checked);
//! - a client text frame `{"type":"danmaku","text":…}` is parsed, stamped and re-encoded
//!   ONCE, then every client in the room (the sender included) gets it;
//! - `{"type":"ping"}` is answered with `{"type":"pong"}` to the sender only.
//!
//! The writer feeds every message already waiting on the room channel before one flush
//! (`feed` + `flush`), the batching a careful tokio developer would add; a viewer that
//! falls more than `CHANNEL` messages behind loses them (`RecvError::Lagged`), counted and
//! printed at exit.
//!
//! Usage: `tokio-broadcast [--addr 127.0.0.1:0] [--threads N]`; prints
//! `tokio-broadcast ready http=ADDR threads=N` on stdout once listening.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages a room channel holds for its slowest viewer.
const CHANNEL: usize = 4096;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>;

static LAGGED: AtomicU64 = AtomicU64::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn main() {
    let mut addr = "127.0.0.1:0".to_string();
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().expect("--addr ADDR"),
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--threads N")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(addr, threads));
}

async fn serve(addr: String, threads: usize) {
    let listener = TcpListener::bind(&addr).await.expect("bind");
    let local = listener.local_addr().expect("local addr");
    println!("tokio-broadcast ready http={local} threads={threads}");
    let rooms: Rooms = Arc::default();
    tokio::spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("tokio-broadcast: lagged (dropped) {}", LAGGED.load(Relaxed));
        std::process::exit(0);
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let _ = connection(stream, rooms).await;
        });
    }
}

fn room_of(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("room="))
        .filter(|r| !r.is_empty() && r.len() <= 64)
        .map(str::to_owned)
}

// The upgrade callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, rooms: Rooms) -> Result<(), Box<dyn std::error::Error>> {
    let mut room = None;
    let ws = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
        room = room_of(&req.uri().to_string());
        Ok(resp)
    })
    .await?;
    let Some(room) = room else { return Ok(()) };
    let tx = rooms
        .lock()
        .expect("rooms lock")
        .entry(room.clone())
        .or_insert_with(|| broadcast::channel(CHANNEL).0)
        .clone();
    let mut rx = tx.subscribe();
    let uid = format!("u{}", NEXT_ID.fetch_add(1, Relaxed));
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            incoming = source.next() => {
                let Some(Ok(msg)) = incoming else { break };
                let Message::Text(text) = msg else {
                    if matches!(msg, Message::Close(_)) { break }
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                match v["type"].as_str() {
                    Some("danmaku") => {
                        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                        let out = serde_json::json!({
                            "type": "danmaku", "room": room, "uid": uid,
                            "text": v["text"], "ts": ts,
                        });
                        let _ = tx.send(Utf8Bytes::from(out.to_string()));
                    }
                    Some("ping") => sink.send(Message::text(r#"{"type":"pong"}"#)).await?,
                    _ => {}
                }
            }
            out = rx.recv() => {
                match out {
                    Ok(m) => {
                        sink.feed(Message::Text(m)).await?;
                        // Everything else already waiting goes out with the same flush.
                        loop {
                            match rx.try_recv() {
                                Ok(m) => sink.feed(Message::Text(m)).await?,
                                Err(broadcast::error::TryRecvError::Lagged(n)) => { LAGGED.fetch_add(n, Relaxed); }
                                Err(_) => break,
                            }
                        }
                        sink.flush().await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => { LAGGED.fetch_add(n, Relaxed); }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }
    Ok(())
}
