//! A typed port into the mesh: how an engine reaches its peers on the other shards without
//! seeing the shard (seastar's `sharded<Service>`: one instance per shard, each talking to
//! its peers by message).
//!
//! An engine gets a [`Port<M>`] for its own message type `M` when the shard wires it; the
//! port hides how `M` travels (wrapped in the shard's message enum on the SPSC rings, or an
//! in-memory queue in tests). Every message to this shard goes through the mesh's local
//! queue too, so a handler is never re-entered from inside itself.
//!
//! [`Call`] is a function run on another shard's instance of an engine, answering through
//! a oneshot: for control paths (the API asking a room's home shard), never per message.

use std::rc::Rc;

/// What a port sends through: the real mesh, or a test's in-memory one.
pub trait Mesh<M> {
    /// This shard's index.
    fn me(&self) -> usize;
    /// How many shards there are.
    fn shards(&self) -> usize;
    /// Queues `msg` for shard `to` (this one included). Never waits: a full lane gives the
    /// message back.
    fn submit_to(&self, to: usize, msg: M) -> Result<(), M>;
}

/// An engine's handle on the mesh, typed by its messages. Cheap to clone.
pub struct Port<M>(Rc<dyn Mesh<M>>);

impl<M> Clone for Port<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M> Port<M> {
    pub fn new(mesh: Rc<dyn Mesh<M>>) -> Self {
        Self(mesh)
    }

    pub fn me(&self) -> usize {
        self.0.me()
    }

    pub fn shards(&self) -> usize {
        self.0.shards()
    }

    /// Sends `msg` to shard `to` (which may be this one); `Err(msg)` if its lane is full.
    pub fn submit_to(&self, to: usize, msg: M) -> Result<(), M> {
        self.0.submit_to(to, msg)
    }

    /// The home shard of `room` (see [`crate::ids::home_shard`]).
    pub fn home_of(&self, room: &str) -> usize {
        crate::ids::home_shard(room, self.shards())
    }

    /// Runs `f` on shard `to`'s instance of the engine and returns its result. `None` if
    /// the lane was full or the shard is gone. One allocation and one round trip per call.
    pub async fn call<E, T, F>(&self, to: usize, f: F) -> Option<T>
    where
        E: 'static,
        M: From<Call<E>>,
        T: Send + 'static,
        F: FnOnce(&Rc<E>) -> T + Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        let call = Call(Box::new(move |e: &Rc<E>| {
            let _ = tx.send(f(e));
        }));
        self.submit_to(to, M::from(call)).ok()?;
        rx.await.ok()
    }
}

/// A function to run on another shard's instance of engine `E`. It owns what it captured
/// (`Send`) and answers through a channel of its own.
pub struct Call<E>(CallFn<E>);

type CallFn<E> = Box<dyn FnOnce(&Rc<E>) + Send>;

impl<E> Call<E> {
    /// `f`, to run on a shard's instance of the engine.
    pub fn new(f: impl FnOnce(&Rc<E>) + Send + 'static) -> Self {
        Call(Box::new(f))
    }

    pub fn run(self, engine: &Rc<E>) {
        (self.0)(engine)
    }
}

impl<E> std::fmt::Debug for Call<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}
