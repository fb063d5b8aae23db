//! The danmaku engine's periodic tasks, one of each per shard: the *flusher* encodes and
//! sends each dirty room's batch once per merge window; the *online ticker* pushes changed
//! online counts; the *sweeper* (every second) closes connections past their heartbeat,
//! write or slow-consumer grace, times out joins the home shard never answered, evicts
//! idle home rooms, drops expired token revocations once a minute and publishes this
//! shard's counters to the metrics registry.
//!
//! Each tick is a plain method (`flush_dirty`, `push_online`, `sweep`) that the tasks call
//! on their timers and a test can call directly.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::cork::Flushed;
use super::engine::{bump, Danmaku};
use super::protocol::{self, close};

/// How long a join may wait for the home shard's answer before the connection is closed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle home room with nothing but what the store holds is kept (see
/// `HomeRoom::is_pristine`).
const PRISTINE_IDLE: Duration = Duration::from_secs(3);

impl Danmaku {
    /// Starts the shard's danmaku tasks.
    pub fn spawn_tasks(self: &Rc<Self>) {
        monoio::spawn(flush_loop(self.clone()));
        monoio::spawn(cork_loop(self.clone()));
        monoio::spawn(online_loop(self.clone()));
        monoio::spawn(sweep_loop(self.clone()));
        if let Some(parking) = super::park::Parking::new() {
            parking.install();
            let _ = self.parking.set(parking.clone());
            monoio::spawn(super::park::run(self.clone(), parking));
        }
    }

    /// Encodes and sends the batch of every room that has items waiting.
    pub fn flush_dirty(&self) {
        let rooms = std::mem::take(&mut *self.dirty.borrow_mut());
        for room in rooms {
            if self.ctx.cluster.is_some() {
                let (items, floor) = match self.home.borrow_mut().get_mut(&room) {
                    Some(r) => {
                        r.dirty = false;
                        (std::mem::take(&mut r.outbox), r.last_id())
                    }
                    None => continue,
                };
                self.send_outbox(&room, floor, items);
                continue;
            }
            let flushed = {
                let mut home = self.home.borrow_mut();
                home.get_mut(&room).and_then(|r| {
                    r.dirty = false;
                    let since = r.pending_since.take();
                    r.flush()
                        .map(|f| (f, r.targets().collect::<Vec<_>>(), since))
                })
            };
            if let Some((frame, targets, since)) = flushed {
                self.deliver(&room, frame, targets, since);
            }
        }
    }

    /// Writes every dirty room's pending frames to its viewers (the end of the loop's
    /// turn; see [`super::cork`]).
    pub fn flush_viewers(&self) {
        let rooms = self.cork.take();
        if rooms.is_empty() {
            self.cork.give_back(rooms);
            return;
        }
        bump(&self.counters.flushes, 1);
        let mut local = self.local.borrow_mut();
        for room in &rooms {
            if let Some(r) = local.get_mut(room) {
                self.flush_room(room, r);
            }
        }
        drop(local);
        self.cork.give_back(rooms);
    }

    /// Counts what a flush did.
    pub(super) fn count_flushed(&self, done: Flushed) {
        bump(&self.counters.deliveries, done.delivered);
        bump(&self.counters.dropped, done.dropped);
        bump(&self.counters.flush_writes, done.writes);
        self.wrote(done.bytes as usize);
    }

    /// Sends the online count of every room whose count changed, at most once per
    /// `interval`.
    pub fn push_online(&self, interval: Duration) {
        let now = self.now_ms();
        let mut out = Vec::new();
        if let Some(cluster) = &self.ctx.cluster {
            let counts = self
                .home
                .borrow()
                .values()
                .map(|r| (r.id.clone(), r.local_online(), r.is_live()))
                .collect();
            let _ = cluster.send(crate::cluster::Request::Counts {
                shard: self.port().me(),
                counts,
            });
        }
        for r in self.home.borrow_mut().values_mut() {
            if r.online_changed
                && now.saturating_sub(r.online_sent_ms) >= interval.as_millis() as u64
            {
                r.online_changed = false;
                r.online_sent_ms = now;
                out.push((
                    r.id.clone(),
                    protocol::online_frame(&r.id, r.online()),
                    r.targets().collect::<Vec<_>>(),
                ));
            }
        }
        for (room, frame, targets) in out {
            self.deliver(&room, frame, targets, None);
        }
    }

    /// The once-a-second sweep (see the module docs).
    pub fn sweep(&self) {
        let s = self.settings();
        let now = self.now();
        let silence = s.heartbeat * 2;
        let write_timeout = s.write_timeout;
        let mut queued = 0usize;
        let mut direct = 0u64;
        for (_, c) in self.conns.borrow().iter() {
            queued += c.queued_bytes();
            direct += c.take_direct_bytes();
            if c.is_closing() {
                continue;
            }
            if c.write_since()
                .is_some_and(|t| now.duration_since(t) >= write_timeout)
            {
                c.close_now(close::ABNORMAL, "write timed out");
                continue;
            }
            if c.over_since()
                .is_some_and(|t| now.duration_since(t) >= s.slow_grace)
            {
                c.close_slow();
            } else if now.duration_since(c.last_seen()) >= silence {
                bump(&self.counters.heartbeat_closed, 1);
                c.close_now(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
            }
        }
        let stuck: Vec<usize> = self
            .joining_since
            .borrow()
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= JOIN_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for key in stuck {
            self.joining_since.borrow_mut().remove(&key);
            if let Some(c) = self.conns.borrow().get(key) {
                c.close_now(close::TRY_AGAIN_LATER, "join timed out, try again");
            }
        }
        let mut idle_ms = s.room_idle.as_millis() as u64;
        if let Some(c) = &self.ctx.cluster {
            // Everything a room holds that matters is in Redis: let it go sooner.
            idle_ms = idle_ms.min(c.linger.as_millis() as u64);
        }
        let pristine_idle_ms = idle_ms.min(PRISTINE_IDLE.as_millis() as u64);
        let wall = self.now_ms();
        let mut gone = Vec::new();
        self.home.borrow_mut().retain(|id, r| {
            let keep_ms = if r.is_pristine() && !r.loading {
                pristine_idle_ms
            } else {
                idle_ms
            };
            let keep = r.dirty
                || r.idle_since_ms
                    .is_none_or(|t| wall.saturating_sub(t) < keep_ms);
            if !keep {
                gone.push(id.clone());
            }
            keep
        });
        // In a cluster, a room let go is no longer listened to.
        if let Some(cluster) = &self.ctx.cluster {
            for room in gone {
                cluster.unsubscribe(room);
            }
        }
        bump(&self.counters.bytes_written, direct);
        self.publish(queued);
    }

    fn publish(&self, queued: usize) {
        let m = &self.ctx.metrics;
        let c = &self.counters;
        let take = |cell: &Cell<u64>| cell.replace(0);
        m.ws_posts.fetch_add(take(&c.posts), Relaxed);
        m.ws_rejected.fetch_add(take(&c.rejected), Relaxed);
        m.ws_items.fetch_add(take(&c.items), Relaxed);
        m.ws_batches.fetch_add(take(&c.batches), Relaxed);
        m.ws_deliveries.fetch_add(take(&c.deliveries), Relaxed);
        m.ws_dropped.fetch_add(take(&c.dropped), Relaxed);
        m.ws_sampled_out.fetch_add(take(&c.sampled_out), Relaxed);
        m.ws_shed.fetch_add(take(&c.shed), Relaxed);
        // (A room's share moves only on its home shard.)
        let shedding = (self.local.borrow().values())
            .filter(|r| r.shed.share() < 1.0)
            .count();
        m.ws_rooms_shedding.store(shedding as u64, Relaxed);
        let parked = self.parking.get().map_or(0, |p| p.parked());
        m.ws_parked.store(parked as u64, Relaxed);
        m.ws_bytes_out.fetch_add(take(&c.bytes_written), Relaxed);
        m.ws_flushes.fetch_add(take(&c.flushes), Relaxed);
        m.ws_flush_writes.fetch_add(take(&c.flush_writes), Relaxed);
        m.ws_slow_closed.fetch_add(take(&c.slow_closed), Relaxed);
        m.ws_heartbeat_closed
            .fetch_add(take(&c.heartbeat_closed), Relaxed);
        m.ws_queue_bytes.store(queued as u64, Relaxed);
        m.ws_rooms_home
            .store(self.home.borrow().len() as u64, Relaxed);
        m.ws_rooms_local
            .store(self.local.borrow().len() as u64, Relaxed);
    }
}

async fn flush_loop(dm: Rc<Danmaku>) {
    let window = dm.settings().merge_window;
    loop {
        dm.flush_kick.notified().await;
        monoio::time::sleep(window).await;
        dm.flush_dirty();
    }
}

async fn cork_loop(dm: Rc<Danmaku>) {
    loop {
        dm.cork.due().await;
        let started = std::time::Instant::now();
        dm.flush_viewers();
        dm.cork.flushed(started);
    }
}

async fn online_loop(dm: Rc<Danmaku>) {
    let interval = dm.settings().online_interval;
    let tick = interval.clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        monoio::time::sleep(tick).await;
        dm.push_online(interval);
    }
}

async fn sweep_loop(dm: Rc<Danmaku>) {
    let mut ticks = 0u32;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        dm.sweep();
        // Expired revocations go once a minute: the set can be large, and an expired
        // entry refuses nothing the token's own `exp` does not.
        ticks = ticks.wrapping_add(1);
        if ticks % 60 == 0 {
            dm.ctx.tokens.sweep(crate::auth::now_unix());
        }
    }
}
