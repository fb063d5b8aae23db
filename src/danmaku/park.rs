//! Idle WebSocket connections parked on the shard: no task, no future, no buffer.
//!
//! Most of a room's viewers say nothing for minutes: frames reach them from the room's
//! flush straight to their sockets ([`super::cork`]), without their task. So a connection
//! whose task has nothing to do (nothing read and undecoded, nothing queued, not closing)
//! parks instead of waiting: its task ends, its socket's descriptor (not the runtime's
//! stream) goes into the shard's epoll set, and the listener's [`Held`] into the
//! [`super::viewer::Conn`]. What is left per idle connection is the `Conn` and its places
//! in the shard's tables.
//!
//! Three things wake a parked connection, and each starts a new task for it
//! ([`super::conn::resume`]), which parks again once idle:
//! - its socket is readable (bytes, end of stream, an error): the epoll set, level
//!   triggered, one shot;
//! - frames were queued for it (the socket did not take a direct send), or it is being
//!   closed (heartbeat, kick, slow consumer, shutdown): its queue's wake-ups, which hold a
//!   waker that names the connection ([`waker`]; no allocation) instead of a task's.
//!
//! One task per shard ([`run`]) waits on the epoll set and on those wakers.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{RawWaker, RawWakerVTable, Waker};

use shards::local::Notify;

use super::engine::Danmaku;
use super::viewer::Conn;
use crate::http::Held;
use crate::ids::ConnRef;

/// A parked connection's socket and what the listener holds for it.
pub struct Parked {
    pub fd: OwnedFd,
    pub held: Held,
}

/// The shard's parked connections: the epoll set their sockets wait in, and the ones woken.
pub struct Parking {
    /// The epoll descriptor, as a stream the runtime can wait on for readability.
    epoll: monoio::net::UnixStream,
    /// Connections whose wakers fired (slab key, generation), for [`run`].
    woken: RefCell<Vec<(u32, u32)>>,
    kick: Notify,
    parked: Cell<usize>,
}

thread_local! {
    /// This thread's shard's parking, for the wakers (a shard is one thread).
    static PARKING: RefCell<Option<Rc<Parking>>> = const { RefCell::new(None) };
}

/// Events taken from the epoll set per call.
const EVENTS: usize = 256;

impl Parking {
    /// The shard's parking, or `None` if no epoll set can be made (nothing parks then).
    pub fn new() -> Option<Rc<Parking>> {
        // SAFETY: epoll_create1 has no memory preconditions; a descriptor it returns is ours.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // The runtime waits for readability with a poll on the descriptor, which an epoll
        // descriptor answers like a socket; nothing else of the stream is used.
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
        let epoll = monoio::net::UnixStream::from_std(std).ok()?;
        Some(Rc::new(Parking {
            epoll,
            woken: RefCell::new(Vec::new()),
            kick: Notify::new(),
            parked: Cell::new(0),
        }))
    }

    /// Makes this parking the one this thread's wakers report to.
    pub fn install(self: &Rc<Self>) {
        PARKING.with(|p| *p.borrow_mut() = Some(self.clone()));
    }

    /// Connections parked now.
    pub fn parked(&self) -> usize {
        self.parked.get()
    }

    /// Parks `conn` with its socket `fd`. Err gives them back when the socket cannot be
    /// watched, or something already asks for the connection's task (the caller goes on).
    pub fn park(&self, conn: &Conn, fd: OwnedFd, held: Held) -> Result<(), (OwnedFd, Held)> {
        let waker = waker(conn.id);
        if conn.out().watch(&waker) {
            return Err((fd, held));
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: key(conn.id),
        };
        // SAFETY: both descriptors are open; `ev` is a live epoll_event.
        let r = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if r != 0 {
            conn.out().unwatch();
            return Err((fd, held));
        }
        // A parked connection holds no outbound queue (it is made again when needed).
        conn.out().release_if_pristine();
        *conn.parked.borrow_mut() = Some(Parked { fd, held });
        self.parked.set(self.parked.get() + 1);
        Ok(())
    }

    /// Takes a parked connection's socket out of the set.
    fn unpark(&self, conn: &Conn) -> Option<Parked> {
        let p = conn.parked.borrow_mut().take()?;
        // SAFETY: both descriptors are open; DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                p.fd.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
        conn.out().unwatch();
        self.parked.set(self.parked.get() - 1);
        Some(p)
    }

    /// The keys of connections whose sockets are ready, as far as `epoll_wait` gives now.
    fn ready(&self, into: &mut Vec<(u32, u32)>) -> bool {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: the buffer holds EVENTS entries; timeout 0 does not block.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as i32,
                0,
            )
        };
        for ev in events.iter().take(n.max(0) as usize) {
            let k = ev.u64;
            into.push((k as u32, (k >> 32) as u32));
        }
        n as usize == EVENTS
    }
}

fn key(id: ConnRef) -> u64 {
    id.key as u64 | (id.gen as u64) << 32
}

/// Runs the shard's parking: resumes each woken connection in a task of its own.
pub async fn run(dm: Rc<Danmaku>, parking: Rc<Parking>) {
    let mut ids = Vec::new();
    loop {
        monoio::select! {
            r = parking.epoll.readable(false) => {
                if r.is_err() {
                    // Not expected for an epoll descriptor; the set is read below anyway
                    // (without waiting), so no ready connection is lost.
                    tracing::warn!("waiting on the parked connections' epoll set failed");
                }
            },
            _ = parking.kick.notified() => {},
        }
        loop {
            ids.append(&mut parking.woken.borrow_mut());
            let more = parking.ready(&mut ids);
            for (key, gen) in ids.drain(..) {
                let id = ConnRef {
                    shard: dm.port().me() as u16,
                    key,
                    gen,
                };
                let Some(conn) = dm.lookup(id) else { continue };
                if let Some(p) = parking.unpark(&conn) {
                    monoio::spawn(super::conn::resume(dm.clone(), conn, p));
                }
            }
            if !more {
                break;
            }
        }
    }
}

/// A waker that reports connection `id` to this thread's parking; it holds no memory.
///
/// The queue's wake-ups are shard-local ([`Notify`]), so it is only ever woken on the
/// shard's own thread, whose parking it reports to.
fn waker(id: ConnRef) -> Waker {
    let data = key(id) as usize as *const ();
    // SAFETY: the vtable's functions only read `data` as an integer; nothing is owned.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    let k = data as usize as u64;
    PARKING.with(|p| {
        if let Some(p) = p.borrow().as_ref() {
            p.woken.borrow_mut().push((k as u32, (k >> 32) as u32));
            p.kick.notify();
        }
    });
}

fn drop_waker(_: *const ()) {}

/// A parked connection's descriptor back as the runtime's stream.
pub fn stream_of(fd: OwnedFd) -> std::io::Result<monoio::net::TcpStream> {
    let raw: RawFd = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` was a connected TCP socket's descriptor, owned by `fd` until now.
    let std = unsafe { std::net::TcpStream::from_raw_fd(raw) };
    monoio::net::TcpStream::from_std(std)
}
