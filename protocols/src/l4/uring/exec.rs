//! The lean per-core executor of the io_uring data path: tasks, timers and this core's ring in
//! one loop that sleeps inside `io_uring_enter` on the ring itself.
//!
//! The hosted driver (`driver.rs`, a glommio task) pays glommio's park on every sleep: about
//! eight system calls (`io_uring_enter` on glommio's three rings, a `membarrier`) plus the
//! eventfd watch. Near idle that is most of a request's cost. [`block_on`] replaces glommio's
//! loop for the duration of a future: glommio keeps the thread's placement (it created and
//! pinned it), while the data path's tasks, its timers and its ring run here:
//!
//! 1. poll the main future if woken, then every task that was ready when the pass began (tasks
//!    woken meanwhile run in the next pass, after their I/O was submitted);
//! 2. when something is still runnable: one driver turn (submit what the tasks queued and reap
//!    what completed, no system call when there is neither) and the due timers;
//! 3. when nothing is runnable and no timer is due: **one** `io_uring_enter` that submits the
//!    queued SQEs and waits for a completion or the next timer (an IORING_OP_TIMEOUT kept armed
//!    in the ring, not a timeout per wait: see `Driver::wait`), then reap. There is no eventfd
//!    and nothing to re-check: the ring is the only source of wake-ups on this thread, and the
//!    kernel returns at once when a completion is already posted.
//!
//! Glommio's own tasks and timers on the thread do not run while [`block_on`] runs: code on the
//! data path spawns and sleeps through [`crate::rt`], which picks this executor when it is
//! running. Wakers are not `Send`-safe in the way tokio's are: waking or cloning one from
//! another thread panics (dropping one there leaks the task's header rather than touching it).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use super::driver;
use super::timers::{TimerId, Timers};

/// Registry index of the main future's waker.
const MAIN: u32 = u32::MAX;

type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A spawned task: its future (taken out once it finishes or the executor drops it) and its
/// place in the run queue and the registry.
struct Task {
    future: RefCell<Option<BoxFuture>>,
    /// In the run queue (or, for the main future, flagged) already.
    queued: Cell<bool>,
    /// Index in the registry; [`MAIN`] for the main future. (u32 keeps the header, with its
    /// reference counts, in a 64-byte allocation.)
    slot: Cell<u32>,
    /// The owner thread, as the address of its [`HOME`] marker.
    home: usize,
}

/// One thread's executor state, installed while [`block_on`] runs.
struct Exec {
    ready: RefCell<VecDeque<Rc<Task>>>,
    main_woken: Cell<bool>,
    /// Every live task, so the executor can drop them all when it ends.
    tasks: RefCell<Vec<Option<Rc<Task>>>>,
    free: RefCell<Vec<usize>>,
    /// Pending timers (a timing wheel, see `timers.rs`).
    timers: RefCell<Timers>,
    tasks_run: Cell<u64>,
    /// The loop's clock, read once per pass (see [`now`]).
    now: Cell<Instant>,
}

thread_local! {
    /// The running executor, owned by [`block_on`]'s frame; null when none runs. A plain
    /// pointer, not an `Rc` in a `RefCell`: it is read on every wake and timer poll, and a
    /// borrow and a reference count there cost about 25 instructions a time.
    static EXEC: Cell<*const Exec> = const { Cell::new(std::ptr::null()) };
    /// Its address names the thread (no destructor, so it is usable until the thread ends).
    static HOME: u8 = const { 0 };
}

fn home() -> usize {
    HOME.with(|h| h as *const u8 as usize)
}

/// Runs `f` on this thread's running executor, if any.
fn with_current<R>(f: impl FnOnce(&Exec) -> R) -> Option<R> {
    let exec = EXEC.with(Cell::get);
    // SAFETY: non-null only while `block_on` runs on this thread, whose frame owns the Exec
    // and clears the pointer (`Installed`) before letting it go.
    (!exec.is_null()).then(|| f(unsafe { &*exec }))
}

/// Runs `f` on this thread's running executor; `caller` names what needs one in the panic
/// when none runs.
fn with_running<R>(caller: &str, f: impl FnOnce(&Exec) -> R) -> R {
    match with_current(f) {
        Some(r) => r,
        None => panic!("{caller} outside uring::exec::block_on"),
    }
}

/// Whether a lean executor is running on this thread.
pub fn is_running() -> bool {
    !EXEC.with(Cell::get).is_null()
}

/// Installs an executor as this thread's for as long as it lives (unwinding included).
struct Installed;

impl Installed {
    fn new(exec: &Rc<Exec>) -> Installed {
        EXEC.with(|e| e.set(Rc::as_ptr(exec)));
        Installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        EXEC.with(|e| e.set(std::ptr::null()));
    }
}

/// The loop's clock: read once at the start of every pass (one `clock_gettime` per pass instead
/// of one per timer, pool check and timestamp). It lags the real time by at most the pass in
/// progress, which under load is the time to serve one batch of ready connections. `None` when
/// no lean executor runs on this thread.
pub fn now() -> Option<Instant> {
    with_current(|e| e.now.get())
}

/// Counters of this thread's lean executor (zero when none runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Tasks alive (spawned and not finished).
    pub tasks: usize,
    /// Timers armed.
    pub timers: usize,
    /// Task polls so far.
    pub polls: u64,
}

/// This thread's executor counters.
pub fn stats() -> ExecStats {
    with_current(|e| ExecStats {
        tasks: e.tasks.borrow().iter().filter(|t| t.is_some()).count(),
        timers: e.timers.borrow().len(),
        polls: e.tasks_run.get(),
    })
    .unwrap_or_default()
}

// ---- wakers -------------------------------------------------------------------------------

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_by_ref_raw, drop_raw);

/// # Safety
/// `ptr` comes from `Rc::into_raw` of a `Task` (a waker's data pointer).
unsafe fn task_ref<'a>(ptr: *const ()) -> &'a Task {
    // SAFETY: the waker holds a strong count, so the task is alive.
    unsafe { &*ptr.cast::<Task>() }
}

fn foreign() -> ! {
    panic!("a Ringway data-path waker was used from another thread than its executor's")
}

unsafe fn clone_raw(ptr: *const ()) -> RawWaker {
    // SAFETY: called on a live waker's data pointer.
    let task = unsafe { task_ref(ptr) };
    if task.home != home() {
        foreign();
    }
    // SAFETY: the pointer came from Rc::into_raw and the count is only touched on this thread.
    unsafe { Rc::increment_strong_count(ptr.cast::<Task>()) };
    RawWaker::new(ptr, &VTABLE)
}

unsafe fn wake_raw(ptr: *const ()) {
    // SAFETY: forwarded; the waker's own count is released after scheduling.
    unsafe {
        wake_by_ref_raw(ptr);
        drop_raw(ptr);
    }
}

unsafe fn wake_by_ref_raw(ptr: *const ()) {
    // SAFETY: called on a live waker's data pointer.
    let task = unsafe { task_ref(ptr) };
    if task.home != home() {
        foreign();
    }
    if task.queued.replace(true) {
        return;
    }
    // When the executor has ended, nothing will run the task again.
    with_current(|exec| {
        if task.slot.get() == MAIN {
            exec.main_woken.set(true);
            return;
        }
        // SAFETY: the pointer came from Rc::into_raw; a new strong count goes into the queue.
        let rc = unsafe {
            Rc::increment_strong_count(ptr.cast::<Task>());
            Rc::from_raw(ptr.cast::<Task>())
        };
        exec.ready.borrow_mut().push_back(rc);
    });
}

unsafe fn drop_raw(ptr: *const ()) {
    // SAFETY: called on a live waker's data pointer.
    let task = unsafe { task_ref(ptr) };
    if task.home != home() {
        // Touching the count from here would race the owner: leak the header instead.
        return;
    }
    // SAFETY: releases the count this waker held.
    unsafe { Rc::decrement_strong_count(ptr.cast::<Task>()) };
}

/// A waker owning one strong count of `task`.
fn waker(task: &Rc<Task>) -> Waker {
    let ptr = Rc::into_raw(Rc::clone(task)).cast::<()>();
    // SAFETY: the vtable's contract holds for a pointer from Rc::into_raw of a Task.
    unsafe { Waker::from_raw(RawWaker::new(ptr, &VTABLE)) }
}

/// A waker borrowing `task` for one poll: no reference count traffic, never dropped.
fn borrowed_waker(task: &Rc<Task>) -> ManuallyDrop<Waker> {
    let ptr = Rc::as_ptr(task).cast::<()>();
    // SAFETY: the task outlives the poll; ManuallyDrop keeps the borrowed count from being
    // released, and clones take their own.
    ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(ptr, &VTABLE)) })
}

// ---- tasks --------------------------------------------------------------------------------

impl Exec {
    fn register(&self, task: Rc<Task>) {
        let mut tasks = self.tasks.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                tasks.push(None);
                tasks.len() - 1
            }
        };
        task.slot.set(slot as u32);
        tasks[slot] = Some(task);
    }

    fn unregister(&self, slot: u32) {
        let slot = slot as usize;
        let removed = self.tasks.borrow_mut().get_mut(slot).and_then(Option::take);
        if removed.is_some() {
            self.free.borrow_mut().push(slot);
        }
        drop(removed);
    }

    /// Polls one task; a finished or panicked task's future is dropped and its slot freed.
    fn run(&self, task: Rc<Task>) {
        task.queued.set(false);
        self.tasks_run.set(self.tasks_run.get() + 1);
        let waker = borrowed_waker(&task);
        let mut cx = Context::from_waker(&waker);
        let outcome = {
            let Ok(mut slot) = task.future.try_borrow_mut() else {
                return;
            };
            let Some(fut) = slot.as_mut() else {
                return;
            };
            catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
        };
        match outcome {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) | Err(_) => {
                if let Err(p) = &outcome {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string payload".into());
                    log::error!("a data-path task panicked and was dropped: {msg}");
                }
                // Dropped outside the borrow: the drop may wake or spawn other tasks.
                let finished = task.future.borrow_mut().take();
                drop(finished);
                self.unregister(task.slot.get());
            }
        }
    }

    /// Wakes the timers due at `now`; returns how many.
    fn fire_timers(&self, now: Instant) -> usize {
        let mut fired = 0;
        loop {
            // The borrow ends before the wake (a waker may be this executor's own).
            let due = self.timers.borrow_mut().pop_due(now);
            match due {
                Some(w) => {
                    fired += 1;
                    w.wake();
                }
                None => return fired,
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.borrow_mut().next_deadline()
    }

    fn runnable(&self) -> bool {
        self.main_woken.get() || !self.ready.borrow().is_empty()
    }

    /// Drops every task still alive (their streams cancel their operations on the ring), then
    /// the timers.
    fn drop_all(&self) {
        loop {
            let live: Vec<Rc<Task>> = self
                .tasks
                .borrow_mut()
                .iter_mut()
                .flat_map(Option::take)
                .collect();
            if live.is_empty() {
                break;
            }
            self.free.borrow_mut().clear();
            for t in live {
                let fut = t.future.borrow_mut().take();
                drop(fut);
            }
        }
        self.tasks.borrow_mut().clear();
        self.ready.borrow_mut().clear();
        let wakers = self.timers.borrow_mut().take_all();
        drop(wakers);
    }
}

/// Spawns `fut` on this thread's lean executor.
///
/// # Panics
/// When no lean executor runs on this thread ([`crate::rt::spawn_local`] picks the right one).
pub fn spawn_local<T: 'static>(fut: impl Future<Output = T> + 'static) -> JoinHandle<T> {
    let state = Rc::new(JoinState {
        output: RefCell::new(None),
        waiter: RefCell::new(None),
        ended: Cell::new(false),
    });
    spawn_boxed(
        Box::pin(Spawned {
            fut,
            end: Ended(Rc::clone(&state)),
        }),
        "uring::exec::spawn_local",
    );
    JoinHandle { state }
}

/// Spawns `fut` on this thread's lean executor with nobody to await it: no join state is
/// allocated (a connection task costs only its header and its future).
///
/// # Panics
/// When no lean executor runs on this thread.
pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    spawn_boxed(Box::pin(fut), "uring::exec::spawn_detached");
}

/// Registers `fut` as a task of this thread's executor and queues its first poll; `caller`
/// names the public function in the panic outside an executor.
fn spawn_boxed(fut: BoxFuture, caller: &str) {
    let task = Rc::new(Task {
        future: RefCell::new(Some(fut)),
        queued: Cell::new(true),
        slot: Cell::new(0),
        home: home(),
    });
    with_running(caller, |exec| {
        exec.register(Rc::clone(&task));
        exec.ready.borrow_mut().push_back(task);
    });
}

struct JoinState<T> {
    output: RefCell<Option<T>>,
    waiter: RefCell<Option<Waker>>,
    /// The task's future is gone (finished, panicked or dropped by the executor).
    ended: Cell<bool>,
}

/// Marks the join state ended and wakes the joiner when the task's future is dropped, however
/// it ends.
struct Ended<T>(Rc<JoinState<T>>);

impl<T> Drop for Ended<T> {
    fn drop(&mut self) {
        self.0.ended.set(true);
        let waiter = self.0.waiter.borrow_mut().take();
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

/// A spawned future and where its output goes. A plain struct rather than an `async` block,
/// which would keep the captured future beside the state awaiting it (twice the memory for
/// every task, every idle connection included).
struct Spawned<F: Future> {
    fut: F,
    end: Ended<F::Output>,
}

impl<F: Future> Future for Spawned<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `fut` is structurally pinned and never moved out; `end` is not pinned and is
        // only used through `&`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        match unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx) {
            Poll::Ready(out) => {
                *this.end.0.output.borrow_mut() = Some(out);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Awaits a spawned task's output. Dropping it detaches the task (it keeps running).
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
}

impl<T> Future for JoinHandle<T> {
    /// `None` when the task panicked or the executor dropped it before it finished.
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(out) = self.state.output.borrow_mut().take() {
            return Poll::Ready(Some(out));
        }
        if self.state.ended.get() {
            return Poll::Ready(None);
        }
        *self.state.waiter.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

// ---- timers -------------------------------------------------------------------------------

/// Completes at a deadline; see [`sleep`].
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    /// The timer's id in the executor's wheel once armed; [`UNARMED`] before the first
    /// pending poll and after it is disarmed (an id whose timer fired is stale, and known so).
    id: TimerId,
    /// The deadline changed ([`Sleep::reset`]) since the timer was armed or last moved.
    moved: bool,
}

/// [`Sleep::id`] of a timer not armed: an id no armed timer has.
const UNARMED: TimerId = TimerId::NONE;

/// A timer on this thread's lean executor: an entry in its timing wheel while armed, freed
/// when it fires or is dropped. No system call: the executor's wait is bounded by the earliest
/// deadline.
///
/// # Panics
/// When polled with no lean executor on this thread.
pub fn sleep(dur: Duration) -> Sleep {
    Sleep {
        deadline: now().unwrap_or_else(Instant::now) + dur,
        id: UNARMED,
        moved: false,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let due = with_running("uring::exec::sleep polled", |exec| {
            // The loop's clock: the loop fires timers against the same reading.
            let now = exec.now.get();
            if now >= this.deadline {
                return true;
            }
            let mut timers = exec.timers.borrow_mut();
            let kept = this.id != UNARMED
                && if this.moved {
                    timers.rearm(this.id, this.deadline, now, cx.waker())
                } else {
                    timers.update(this.id, cx.waker())
                };
            if !kept {
                // Not armed yet, or fired: a timer that fired and is polled before its
                // deadline by the loop's clock was reset to a later one (the wheel never
                // fires early).
                this.id = timers.arm(this.deadline, now, cx.waker().clone());
            }
            this.moved = false;
            false
        });
        if due {
            self.disarm();
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep {
    /// Moves the deadline (earlier or later), keeping the timer's entry: the next poll moves it
    /// in the wheel, which for a later deadline costs next to nothing (see `Timers::rearm`).
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.moved = true;
    }

    fn disarm(&mut self) {
        if self.id != UNARMED {
            let id = std::mem::replace(&mut self.id, UNARMED);
            // The waker is dropped after the borrow ends.
            let removed = with_current(|exec| exec.timers.borrow_mut().disarm(id));
            drop(removed);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

// ---- the loop -----------------------------------------------------------------------------

/// Runs `fut` to completion on this thread's lean executor, with every task it spawns, its
/// timers and this thread's ring; then drops the tasks still alive and cancels what they left
/// in flight.
///
/// Call it from the thread that will own the ring (a glommio executor's thread, for its
/// placement; glommio's own tasks there wait until this returns).
///
/// # Errors
/// When the ring cannot be created, or an executor already runs on this thread.
pub fn block_on<F: Future>(fut: F) -> io::Result<F::Output> {
    if is_running() {
        return Err(io::Error::other(
            "uring::exec::block_on: already running on this thread",
        ));
    }
    let driver = driver::current_lean()?;
    let exec = Rc::new(Exec {
        ready: RefCell::new(VecDeque::new()),
        main_woken: Cell::new(true),
        tasks: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        timers: RefCell::new(Timers::default()),
        tasks_run: Cell::new(0),
        now: Cell::new(Instant::now()),
    });
    let installed = Installed::new(&exec);
    let main = Rc::new(Task {
        future: RefCell::new(None),
        queued: Cell::new(true),
        slot: Cell::new(MAIN),
        home: home(),
    });
    let main_waker = waker(&main);
    let out = {
        let mut fut = pin!(fut);
        let out = catch_unwind(AssertUnwindSafe(|| {
            run_loop(&exec, &driver, &main, &main_waker, fut.as_mut())
        }));
        // Tasks go before the ring: dropping their streams queues cancellations.
        exec.drop_all();
        out
    };
    drop(main_waker);
    driver.shutdown_lean();
    drop(installed);
    match out {
        Ok(v) => Ok(v),
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn run_loop<T>(
    exec: &Exec,
    driver: &driver::Driver,
    main: &Rc<Task>,
    main_waker: &Waker,
    mut fut: Pin<&mut impl Future<Output = T>>,
) -> T {
    // Whether the last pass left its submissions queued (see below).
    let mut held = false;
    loop {
        exec.now.set(Instant::now());
        if exec.main_woken.replace(false) {
            main.queued.set(false);
            if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(main_waker)) {
                return v;
            }
        }
        // The tasks ready when the pass began; those they wake run after the next submit.
        let n = exec.ready.borrow().len();
        for _ in 0..n {
            let next = exec.ready.borrow_mut().pop_front();
            match next {
                Some(t) => exec.run(t),
                None => break,
            }
        }
        if exec.runnable() {
            // Tasks woken during the pass (a connection just accepted, a wake from another
            // task) run next; what this pass queued goes to the kernel with what they queue, in
            // one io_uring_enter, unless the kernel flagged completions to run. Held for one
            // pass at most, so tasks that keep waking each other cannot starve the ring.
            if held || driver.kernel_flagged() {
                driver.turn();
                held = false;
            } else {
                driver.reap();
                held = true;
            }
            if !exec.timers.borrow().is_empty() {
                exec.fire_timers(exec.now.get());
            }
            continue;
        }
        // About to sleep: a fresh reading, so no due timer is slept past.
        let now = Instant::now();
        exec.now.set(now);
        if exec.fire_timers(now) > 0 {
            continue;
        }
        held = false;
        driver.wait(now, exec.next_deadline());
    }
}
