//! One core's balancing state for one upstream: the [`Selector`] over the control plane's latest
//! snapshot, the per-peer in-flight counts behind `max_connections_per_peer`, and the attempt
//! record ([`InFlight`]) a request keeps in its context from `upstream_peer` until the attempt's
//! outcome is known (`fail_to_connect`, `error_while_proxy` or `logging`).
//!
//! Everything here belongs to one core: `Cell`/`RefCell`, no atomics, except the one relaxed
//! load of the snapshot's generation per pick.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use ringway_balancer::{
    cookie_value, Attempt, Backend, Exclude, FailureKind, HashKey, IpKey, Outcome, PassiveHealth,
    Selector, Tried,
};

use super::route::target_path;
use crate::config::UpstreamConf;
use crate::health::Published;
use crate::proxy::Session;

/// Why no backend could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoBackend {
    /// Every backend is down, ejected on this core, or (for a retry) already tried.
    NoneUsable,
    /// Some backend is at `max_connections_per_peer`: waiting may help.
    AtCap,
}

/// One core's state for one upstream.
pub(super) struct CoreUpstream {
    published: Arc<Published>,
    state: RefCell<State>,
    hash_key: Option<HashKey>,
    cap: Option<u32>,
    /// Woken whenever an attempt ends while some backend is at the cap.
    freed: Notify,
}

struct State {
    selector: Selector,
    /// The snapshot generation the selector follows.
    seen: u64,
    /// Requests in flight per backend of the current snapshot (kept only with a cap).
    in_use: Vec<u32>,
    /// How many backends are at the cap.
    at_cap: usize,
    /// Bumped when the backend list (not only health) changes, so that an attempt's index is
    /// looked up again by address.
    list: u64,
}

impl CoreUpstream {
    /// This core's state for `conf`, following the snapshots in `published`.
    pub(super) fn new(conf: &UpstreamConf, published: Arc<Published>) -> CoreUpstream {
        let (seen, set) = published.load();
        // A single static peer has nothing to fail over to: never eject it (nginx does the same).
        let passive = if conf.peers.len() == 1 && !conf.has_names() {
            PassiveHealth::disabled()
        } else {
            conf.passive
        };
        let n = set.len();
        let selector = Selector::new(set, conf.algorithm).with_passive_health(passive);
        CoreUpstream {
            published,
            state: RefCell::new(State {
                selector,
                seen,
                in_use: vec![0; n],
                at_cap: 0,
                list: 0,
            }),
            hash_key: conf.hash_key.clone(),
            cap: conf.max_connections_per_peer,
            freed: Notify::default(),
        }
    }

    /// The hash key the algorithm places requests by, if it uses one.
    pub(super) fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    /// Resolves after the next attempt on this upstream ends (a connection slot may be free).
    pub(super) fn slot_freed(&self) -> NotifyWait<'_> {
        self.freed.wait()
    }

    /// Chooses a backend for one attempt and starts the attempt: a backend not in `tried` if
    /// there is one, else any usable one (a retry may go back to a backend only when every
    /// other is unusable). Backends at `max_connections_per_peer` are skipped.
    pub(super) fn start_attempt(
        self: &Rc<Self>,
        key: Option<&[u8]>,
        tried: &Tried,
        now: Instant,
    ) -> Result<InFlight, NoBackend> {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        self.follow_snapshot(st);
        let picked = {
            let skip = Skip {
                tried,
                cap: self.cap,
                in_use: &st.in_use,
                at_cap: st.at_cap,
            };
            st.selector.pick(key, now, &skip).or_else(|| {
                if tried.is_empty() {
                    return None;
                }
                let again = Skip {
                    tried: &Tried::new(),
                    ..skip
                };
                st.selector.pick(key, now, &again)
            })
        };
        let Some(index) = picked else {
            return Err(if st.at_cap > 0 {
                NoBackend::AtCap
            } else {
                NoBackend::NoneUsable
            });
        };
        let addr = match st.selector.backend(index) {
            Some(b) => b.addr,
            None => return Err(NoBackend::NoneUsable),
        };
        let attempt = st.selector.on_start(index);
        if let (Some(cap), Some(n)) = (self.cap, st.in_use.get_mut(index)) {
            *n += 1;
            if *n == cap {
                st.at_cap += 1;
            }
        }
        Ok(InFlight {
            up: Rc::clone(self),
            attempt: Some(attempt),
            addr,
            index,
            list: st.list,
            started: now,
        })
    }

    /// Switches to the control plane's latest snapshot if it changed.
    fn follow_snapshot(&self, st: &mut State) {
        if self.published.generation() == st.seen {
            return;
        }
        let (generation, set) = self.published.load();
        if !st.selector.backend_set().same_backends(&set) {
            if self.cap.is_some() {
                let old: HashMap<SocketAddr, u32> = st
                    .selector
                    .backend_set()
                    .backends()
                    .iter()
                    .zip(&st.in_use)
                    .map(|(b, n)| (b.addr, *n))
                    .collect();
                st.in_use = set
                    .backends()
                    .iter()
                    .map(|b| old.get(&b.addr).copied().unwrap_or(0))
                    .collect();
                st.at_cap = st
                    .in_use
                    .iter()
                    .filter(|n| self.cap.is_some_and(|c| **n >= c))
                    .count();
            }
            st.list += 1;
        }
        st.selector.update(set);
        st.seen = generation;
    }

    /// Ends an attempt: feeds its outcome to the selector and releases its connection slot.
    fn finish(&self, f: &mut InFlight, outcome: Outcome, now: Instant) {
        let Some(attempt) = f.attempt.take() else {
            return;
        };
        // Only a drop during a panic could find the state borrowed; the count is then lost
        // with the request, which is the lesser harm.
        let Ok(mut guard) = self.state.try_borrow_mut() else {
            return;
        };
        let st = &mut *guard;
        st.selector.on_finish(attempt, outcome, now);
        let Some(cap) = self.cap else {
            return;
        };
        let index = if f.list == st.list {
            Some(f.index)
        } else {
            st.selector.backend_set().index_of(f.addr)
        };
        if let Some(n) = index.and_then(|i| st.in_use.get_mut(i)) {
            if *n == cap {
                st.at_cap = st.at_cap.saturating_sub(1);
            }
            *n = n.saturating_sub(1);
        }
        drop(guard);
        self.freed.notify();
    }
}

/// What one pick skips on top of unhealthy and ejected backends: those the request tried, and
/// those at the connection cap.
#[derive(Clone, Copy)]
struct Skip<'a> {
    tried: &'a Tried,
    cap: Option<u32>,
    in_use: &'a [u32],
    at_cap: usize,
}

impl Exclude for Skip<'_> {
    #[inline]
    fn excludes(&self, index: usize, backend: &Backend) -> bool {
        self.tried.excludes(index, backend)
            || self
                .cap
                .is_some_and(|c| self.in_use.get(index).is_some_and(|n| *n >= c))
    }

    #[inline]
    fn excludes_nothing(&self) -> bool {
        self.tried.excludes_nothing() && self.at_cap == 0
    }
}

/// One attempt in progress on one backend, kept in the request's context until its outcome is
/// known. Dropped unfinished (a request cancelled mid-attempt), it ends as a failure that
/// neither counts toward passive ejection nor resets it, so no in-flight count leaks.
pub(super) struct InFlight {
    up: Rc<CoreUpstream>,
    attempt: Option<Attempt>,
    addr: SocketAddr,
    index: usize,
    list: u64,
    started: Instant,
}

impl InFlight {
    /// The backend's address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend's index in the snapshot the pick used.
    pub(super) fn index(&self) -> usize {
        self.index
    }

    /// Ends the attempt at `now` with `failure` (`None`: it succeeded); `answered_at`, when
    /// known, is when the response head arrived, the latency fed to the selector's average.
    pub(super) fn finish(
        mut self,
        failure: Option<FailureKind>,
        answered_at: Option<Instant>,
        now: Instant,
    ) {
        let latency = answered_at
            .unwrap_or(now)
            .saturating_duration_since(self.started);
        let outcome = match failure {
            None => Outcome::success(latency),
            Some(kind) => Outcome::failure(kind, latency),
        };
        let up = Rc::clone(&self.up);
        up.finish(&mut self, outcome, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.attempt.is_some() {
            let now = ringway_protocols::rt::now();
            let outcome = Outcome::failure(
                FailureKind::Other,
                now.saturating_duration_since(self.started),
            );
            let up = Rc::clone(&self.up);
            up.finish(self, outcome, now);
        }
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("addr", &self.addr)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A request's hash key bytes, borrowed from the request where possible.
pub(super) enum RequestKey<'a> {
    /// The client's IP address.
    Ip(IpKey),
    /// A path, header value or cookie value.
    Bytes(&'a [u8]),
}

impl RequestKey<'_> {
    /// The bytes to hash.
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            RequestKey::Ip(ip) => ip.as_ref(),
            RequestKey::Bytes(b) => b,
        }
    }
}

/// The key `hash_key` names in this request; `None` when the request lacks the header or cookie
/// (the hash algorithms then balance it round robin).
pub(super) fn request_key<'a>(key: &HashKey, session: &'a Session) -> Option<RequestKey<'a>> {
    let req = session.req_header();
    match key {
        HashKey::ClientIp => Some(RequestKey::Ip(IpKey::from(session.client_addr().ip()))),
        HashKey::Path => Some(RequestKey::Bytes(target_path(req).as_bytes())),
        HashKey::Header(name) => req.headers.get(name).map(RequestKey::Bytes),
        HashKey::Cookie(name) => req
            .headers
            .get_all("cookie")
            .find_map(|h| cookie_value(h, name.as_bytes()))
            .map(RequestKey::Bytes),
    }
}

/// A core-local "something was released" notification: many waiters, no atomics.
#[derive(Default)]
struct Notify {
    epoch: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.epoch.set(self.epoch.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn wait(&self) -> NotifyWait<'_> {
        NotifyWait {
            notify: self,
            epoch: self.epoch.get(),
        }
    }
}

/// The future of [`CoreUpstream::slot_freed`]: ready after the next notification.
pub(super) struct NotifyWait<'a> {
    notify: &'a Notify,
    epoch: u64,
}

impl Future for NotifyWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.epoch.get() != self.epoch {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_balancer::{Algorithm, BackendSet, Health};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn conf(ports: &[u16], extra: &str) -> UpstreamConf {
        let peers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[upstreams]]\nname = \"a\"\npeers = [{}]\n{extra}\n[[routes]]\nupstream = \"a\"\n",
            peers.join(", ")
        );
        crate::config::parse(&text, "t")
            .unwrap()
            .upstreams
            .remove(0)
    }

    fn core(conf: &UpstreamConf) -> (Rc<CoreUpstream>, Arc<Published>) {
        let set = Arc::new(BackendSet::new(conf.backends.clone()).unwrap());
        let published = Arc::new(Published::new(set));
        (
            Rc::new(CoreUpstream::new(conf, Arc::clone(&published))),
            published,
        )
    }

    #[test]
    fn a_retry_prefers_untried_backends_then_any() {
        let c = conf(&[1, 2], "");
        let (up, _) = core(&c);
        let now = ringway_protocols::rt::now();
        let mut tried = Tried::new();
        let a = up.start_attempt(None, &tried, now).unwrap();
        tried.insert(a.addr());
        let b = up.start_attempt(None, &tried, now).unwrap();
        assert_ne!(a.addr(), b.addr());
        tried.insert(b.addr());
        // Both tried: a third attempt may go back to either.
        assert!(up.start_attempt(None, &tried, now).is_ok());
    }

    #[test]
    fn the_cap_skips_full_backends_and_frees_on_finish() {
        let c = conf(&[1, 2], "max_connections_per_peer = 1");
        let (up, _) = core(&c);
        let now = ringway_protocols::rt::now();
        let none = Tried::new();
        let a = up.start_attempt(None, &none, now).unwrap();
        let b = up.start_attempt(None, &none, now).unwrap();
        assert_ne!(a.addr(), b.addr());
        assert_eq!(
            up.start_attempt(None, &none, now).err(),
            Some(NoBackend::AtCap)
        );
        let freed = a.addr();
        a.finish(None, None, now);
        let c2 = up.start_attempt(None, &none, now).unwrap();
        assert_eq!(c2.addr(), freed);
        // Dropping an unfinished attempt releases its slot too.
        drop(b);
        drop(c2);
        assert!(up.start_attempt(None, &none, now).is_ok());
    }

    #[test]
    fn follows_published_health_and_lists() {
        let c = conf(&[1, 2], "");
        let (up, published) = core(&c);
        let (_, set) = published.load();
        published.publish(Arc::new(
            set.with_health(Health::from_flags(vec![false, true]))
                .unwrap(),
        ));
        let now = ringway_protocols::rt::now();
        for _ in 0..4 {
            let a = up.start_attempt(None, &Tried::new(), now).unwrap();
            assert_eq!(a.addr(), addr(2));
        }
        published.publish(Arc::new(
            BackendSet::new(vec![Backend::new(addr(3))]).unwrap(),
        ));
        let a = up.start_attempt(None, &Tried::new(), now).unwrap();
        assert_eq!((a.addr(), a.index()), (addr(3), 0));
        // Everything down: nothing usable.
        let (_, set) = published.load();
        published.publish(Arc::new(
            set.with_health(Health::from_flags(vec![false])).unwrap(),
        ));
        assert_eq!(
            up.start_attempt(None, &Tried::new(), now).err(),
            Some(NoBackend::NoneUsable)
        );
    }

    #[test]
    fn an_attempt_started_before_a_list_change_finishes_by_address() {
        let c = conf(&[1, 2], "max_connections_per_peer = 1");
        let (up, published) = core(&c);
        let now = ringway_protocols::rt::now();
        let a = up.start_attempt(None, &Tried::new(), now).unwrap();
        let held = a.addr();
        // The list changes (held backend moves to index 1) while the attempt is in flight.
        published.publish(Arc::new(
            BackendSet::new(vec![Backend::new(addr(9)), Backend::new(held)]).unwrap(),
        ));
        let b = up.start_attempt(None, &Tried::new(), now).unwrap();
        assert_eq!(b.addr(), addr(9), "the held backend is still at its cap");
        a.finish(Some(FailureKind::Connect), None, now);
        let c2 = up.start_attempt(None, &Tried::new(), now).unwrap();
        assert_eq!(c2.addr(), held);
    }

    #[test]
    fn single_static_peers_are_never_ejected() {
        let c = conf(&[1], "max_fails = 1");
        let (up, _) = core(&c);
        let now = ringway_protocols::rt::now();
        for _ in 0..5 {
            let a = up.start_attempt(None, &Tried::new(), now).unwrap();
            a.finish(Some(FailureKind::Connect), None, now);
        }
        let c = conf(&[1, 2], "max_fails = 1\nalgorithm = \"round_robin\"");
        let (up, _) = core(&c);
        let a = up.start_attempt(None, &Tried::new(), now).unwrap();
        let dead = a.addr();
        a.finish(Some(FailureKind::Connect), None, now);
        for _ in 0..5 {
            let a = up.start_attempt(None, &Tried::new(), now).unwrap();
            assert_ne!(a.addr(), dead);
            a.finish(None, None, now);
        }
        assert_eq!(c.algorithm, Algorithm::RoundRobin);
    }
}
