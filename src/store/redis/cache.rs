//! What a node last read of rooms and users, so that while Redis is unreachable its reads
//! answer from what the node has (writes still answer 503): a room's page, the room list's
//! pages, a user. Bounded: past [`MAX`] entries of a kind, the oldest half is forgotten.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use super::super::model::{Room, RoomPage, User};

/// Entries kept per kind at most.
pub const MAX: usize = 10_000;

/// One kind of entry, forgetting the oldest past `MAX`.
struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Recent<K, V> {
    fn new() -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn put(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        if self.map.len() > MAX {
            for _ in 0..MAX / 2 {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn forget(&mut self, k: &K) {
        self.map.remove(k);
    }

    fn get(&self, k: &K) -> Option<V> {
        self.map.get(k).cloned()
    }
}

/// The backend's memory of its last reads (the store thread only).
pub struct ReadCache {
    rooms: RefCell<Recent<String, Room>>,
    pages: RefCell<Recent<(usize, usize), RoomPage>>,
    users: RefCell<Recent<String, User>>,
}

impl ReadCache {
    pub fn new() -> Self {
        ReadCache {
            rooms: RefCell::new(Recent::new()),
            pages: RefCell::new(Recent::new()),
            users: RefCell::new(Recent::new()),
        }
    }

    pub fn room(&self, id: &str, room: Option<&Room>) {
        match room {
            Some(r) => self.rooms.borrow_mut().put(id.to_string(), r.clone()),
            None => self.rooms.borrow_mut().forget(&id.to_string()),
        }
    }

    pub fn cached_room(&self, id: &str) -> Option<Room> {
        self.rooms.borrow().get(&id.to_string())
    }

    pub fn page(&self, offset: usize, limit: usize, page: &RoomPage) {
        self.pages.borrow_mut().put((offset, limit), page.clone());
    }

    pub fn cached_page(&self, offset: usize, limit: usize) -> Option<RoomPage> {
        self.pages.borrow().get(&(offset, limit))
    }

    pub fn user(&self, user: &User) {
        self.users.borrow_mut().put(user.uid.clone(), user.clone());
    }

    pub fn cached_user(&self, uid: &str) -> Option<User> {
        self.users.borrow().get(&uid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_half_past_the_bound() {
        let mut r = Recent::new();
        for i in 0..=MAX {
            r.put(i, i);
        }
        assert_eq!(r.get(&0), None);
        assert_eq!(r.get(&MAX), Some(MAX));
        assert!(r.map.len() <= MAX / 2 + 1);
        r.put(MAX, 7);
        assert_eq!(r.get(&MAX), Some(7));
    }
}
