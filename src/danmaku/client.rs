//! What a viewer's messages do, once the connection's reader has decoded them: control
//! frames (pongs, close), the app-level ping, `auth`, and posts and moderation commands,
//! which are checked here (login, per-connection rate, text length and filter) and then
//! sent to the room's home shard. Every answer goes through the connection's bounded queue.

use std::rc::Rc;

use super::engine::Danmaku;
use super::hygiene::{clean_text, Verdict};
use super::protocol::{self, close, code, ClientMsg};
use super::viewer::{Conn, User};
use super::{Actor, ModOp, Post, PostBody};
use crate::ws::codec::Message;

/// One decoded message from a viewer.
pub fn on_message(dm: &Danmaku, conn: &Rc<Conn>, msg: Message) {
    // Any message is a sign of life (the heartbeat check).
    conn.touch(dm.now());
    match msg {
        Message::Text(text) => match protocol::parse_client(&text) {
            Ok(m) => on_client(dm, conn, m),
            Err(why) => conn.send(protocol::error_frame(code::BAD_MESSAGE, &why, None)),
        },
        Message::Binary(_) => conn.send(protocol::error_frame(
            code::BAD_MESSAGE,
            "binary frames are not part of the protocol; send JSON text",
            None,
        )),
        Message::Ping(payload) => conn.send_pong(crate::ws::codec::encode_frame(
            tungstenite::protocol::frame::coding::OpCode::Control(
                tungstenite::protocol::frame::coding::Control::Pong,
            ),
            &payload,
        )),
        Message::Pong(_) => {}
        Message::Close(_) => conn.close(close::NORMAL, "bye"),
    }
}

fn on_client(dm: &Danmaku, conn: &Rc<Conn>, msg: ClientMsg) {
    match msg {
        ClientMsg::Ping { ts } => {
            let now = dm.now_ms();
            conn.send(protocol::pong_frame(ts.as_ref(), now));
        }
        ClientMsg::Auth { token } => {
            if conn.user.borrow().is_some() {
                return conn.send(protocol::error_frame(
                    code::ALREADY_AUTHENTICATED,
                    "already authenticated",
                    None,
                ));
            }
            match dm.tokens().verify(&token) {
                Ok(claims) => {
                    let user = Rc::new(User::from_claims(claims));
                    let uid = user.uid.clone();
                    *conn.user.borrow_mut() = Some(user);
                    dm.identify(conn, uid.clone());
                    conn.send(protocol::authed_frame(&uid));
                }
                Err(e) => conn.send(protocol::error_frame(code::BAD_TOKEN, e.message(), None)),
            }
        }
        other => submit(dm, conn, other),
    }
}

/// A post or moderation command from `conn`, over the WebSocket or HTTP (`POST
/// /api/v1/rooms/{id}/danmaku`): login, moderation, the connection's rate, the text checks,
/// then the room's home shard. Every answer (ack or error) reaches `conn`'s queue.
pub fn submit(dm: &Danmaku, conn: &Rc<Conn>, msg: ClientMsg) {
    let settings = &dm.ctx.shared.settings;
    match msg {
        ClientMsg::Ping { .. } | ClientMsg::Auth { .. } => {}
        other => {
            let cid = other.cid().map(str::to_owned);
            let Some(user) = conn.user.borrow().clone() else {
                return conn.send(protocol::error_frame(
                    code::LOGIN_REQUIRED,
                    "log in to send (anonymous viewers may only read)",
                    cid.as_deref(),
                ));
            };
            let reply = |c: u32, m: &str| conn.send(protocol::error_frame(c, m, cid.as_deref()));
            if let Some(op) = moderation(&other) {
                let actor = Actor::User {
                    uid: user.uid.clone(),
                    global_admin: user.admin,
                    reply: conn.id,
                    cid,
                };
                return dm.moderate(conn.room.clone(), op, actor, Some(conn));
            }
            let mut bucket = conn.bucket.get();
            let allowed = bucket.take(settings.rate_per_sec, settings.rate_burst, dm.now_ms());
            conn.bucket.set(bucket);
            if !allowed {
                dm.rejected();
                return reply(code::RATE_LIMITED, "too many messages; slow down");
            }
            let body = match other {
                ClientMsg::Danmaku {
                    text, color, mode, ..
                } => {
                    let Some(text) = checked_text(dm, &text, &reply) else {
                        return;
                    };
                    let Some(color) = protocol::parse_color(color.as_deref()) else {
                        return reply(code::BAD_MESSAGE, "color must be #RRGGBB");
                    };
                    PostBody::Danmaku {
                        text,
                        color,
                        mode: mode.unwrap_or_default(),
                    }
                }
                ClientMsg::Gift { gift_id, count, .. } => PostBody::Gift {
                    gift_id,
                    count: count.unwrap_or(1).clamp(1, 9999),
                },
                ClientMsg::Like { count, .. } => PostBody::Like {
                    count: count.unwrap_or(1).clamp(1, 100),
                },
                ClientMsg::Pm { to, text, .. } => {
                    let Some(text) = checked_text(dm, &text, &reply) else {
                        return;
                    };
                    PostBody::Pm {
                        to: to.into(),
                        text,
                    }
                }
                _ => return,
            };
            let post = Post {
                room: conn.room.clone(),
                from: Some(conn.id),
                at: dm.now(),
                uid: user.uid.clone(),
                nick: user.nick.clone(),
                vip: user.vip,
                cid,
                body,
            };
            dm.post(conn, post);
        }
    }
}

/// Cleans, length-checks and filters text; answers the client and returns `None` if it
/// cannot be sent.
fn checked_text(dm: &Danmaku, text: &str, reply: &impl Fn(u32, &str)) -> Option<String> {
    let settings = &dm.ctx.shared.settings;
    let text = clean_text(text);
    let chars = text.chars().count();
    if chars == 0 || chars > settings.max_text_chars {
        dm.rejected();
        reply(
            code::TEXT_LENGTH,
            &format!("text must be 1 to {} characters", settings.max_text_chars),
        );
        return None;
    }
    match dm.ctx.shared.filter.check(text) {
        Verdict::Clean(t) | Verdict::Masked(t) => Some(t),
        Verdict::Rejected => {
            dm.rejected();
            reply(code::FILTERED, "text contains a blocked word");
            None
        }
    }
}

fn moderation(msg: &ClientMsg) -> Option<ModOp> {
    Some(match msg {
        ClientMsg::Mute { uid, seconds, .. } => ModOp::Mute {
            uid: uid.as_str().into(),
            secs: *seconds,
        },
        ClientMsg::Unmute { uid, .. } => ModOp::Unmute {
            uid: uid.as_str().into(),
        },
        ClientMsg::Ban { uid, .. } => ModOp::Ban {
            uid: uid.as_str().into(),
        },
        ClientMsg::Unban { uid, .. } => ModOp::Unban {
            uid: uid.as_str().into(),
        },
        ClientMsg::Kick { uid, .. } => ModOp::Kick {
            uid: uid.as_str().into(),
        },
        ClientMsg::SlowMode { seconds, .. } => ModOp::SlowMode { secs: *seconds },
        _ => return None,
    })
}
