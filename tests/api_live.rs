//! The whole path a broadcaster takes: create a room through the API, publish to its signed
//! push URL with ffmpeg (the real RTMP client), and watch the room go live — on its event
//! stream, in the room list, and for danmaku viewers — then offline when ffmpeg stops.

mod support;

use std::time::Duration;

use support::api::{call, create_room, dev_login, ok, Sse};
use support::media::publish;
use support::Server;

const T: Duration = Duration::from_secs(20);

#[test]
fn sse_subscriber_sees_live_when_ffmpeg_publishes() {
    support::require("ffmpeg");
    let server = Server::start(&[
        "--shards",
        "2",
        "--set",
        "auth.dev_login=true",
        "--set",
        "media.publisher_grace_ms=500",
    ]);
    let rtmp = server
        .ready_field("rtmp")
        .expect("the ready line names the RTMP address (rtmp=…)");
    let alice = dev_login(&server, "alice");
    let room = create_room(&server, &alice, "on air");
    let id = room["id"].as_str().unwrap().to_string();
    // The URL the API signed, pointed at the port this test server listens on.
    let push = room["push"]["url"].as_str().unwrap();
    let after_host = push
        .strip_prefix("rtmp://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path)
        .expect("rtmp://host:port/app/stream?sig");
    let url = format!("rtmp://{rtmp}/{after_host}");

    let mut sse = Sse::open(&server, &format!("/api/v1/rooms/{id}/events")).unwrap();
    sse.expect("live", T, |d| d["live"] == false);

    let publish = |url: &str| publish(url, 60);

    let mut ffmpeg = publish(&url);
    let live = sse.expect("live", T, |d| d["live"] == true);
    assert_eq!(live.data["room"], id.as_str());
    let listed = ok(&server.get("/api/v1/rooms?status=live"));
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(listed["items"][0]["status"], "live");
    // Live rooms come first in the full list too.
    let other = create_room(&server, &alice, "newer but offline");
    let all = ok(&server.get("/api/v1/rooms"));
    assert_eq!(all["items"][0]["id"], id.as_str(), "{all}");
    assert_eq!(all["items"][1]["id"], other["id"]);

    // The publisher leaves: offline.
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    sse.expect("live", T, |d| d["live"] == false);

    // Live again, then the owner closes the room: the publisher is stopped, viewers see
    // it go offline, and publishing to the room is refused from then on.
    let mut ffmpeg = publish(&url);
    sse.expect("live", T, |d| d["live"] == true);
    let path = format!("/api/v1/rooms/{id}");
    let closed = ok(&call(&server, "DELETE", &path, Some(&alice), None));
    assert_eq!(closed["status"], "closed");
    sse.expect("live", T, |d| d["live"] == false);
    let stopped = support::eventually(T, || ffmpeg.try_wait().unwrap());
    assert!(stopped.is_some(), "ffmpeg was disconnected");
    let mut again = publish(&url);
    let refused = support::eventually(T, || again.try_wait().unwrap());
    assert!(
        refused.is_some_and(|s| !s.success()),
        "publishing to a closed room is refused"
    );
    let late = sse.next(Duration::from_secs(2));
    assert!(
        late.as_ref().is_none_or(|e| e.data["live"] != true),
        "the room stays offline: {late:?}"
    );
}
