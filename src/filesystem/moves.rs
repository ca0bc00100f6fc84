//! Directory renames against the operations that write under them.
//!
//! S3 has no rename: a directory moves by copying every key below it, then deleting the old
//! ones, which takes a while for a large tree, and its names stay where they were until then.
//! An upload, `mkdir`, `unlink`, rename or metadata change below it meanwhile would write to,
//! or delete from, the old prefix after its keys were listed or copied: the change would be
//! lost, land under the old name, or come back. So each such operation registers the
//! directories it works in ([`TreeMoves::work`]) and waits while a rename moves them, and a
//! directory rename ([`TreeMoves::moving`]) waits for the operations already working below its
//! two paths, then holds new ones until its keys have moved and the namespace shows the new
//! name. Operations elsewhere in the mount go on.
//!
//! An operation that runs inside another (an upload inside a rename, a marker written for a
//! parent inside an unlink) is covered by the outer registration: registering again could wait
//! for a rename that itself waits for the outer one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::Notify;

tokio::task_local! {
    /// Set while the task runs a registered operation.
    static REGISTERED: ();
}

/// The directory renames in progress and the operations working under some path.
#[derive(Debug, Default)]
pub(super) struct TreeMoves {
    state: Mutex<State>,
    /// Woken whenever a rename or an operation ends.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Paths of the operations at work, by registration.
    working: HashMap<u64, Vec<String>>,
    /// Source and destination paths of the directories being moved, by registration.
    moving: HashMap<u64, [String; 2]>,
}

/// Whether the directory at `dir` is `path` or one of its ancestors (`""` is the mount root).
fn covers(dir: &str, path: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Removes its registration (and wakes the waiters) when the operation or rename ends, however
/// it ends.
struct Registration<'a> {
    moves: &'a TreeMoves,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.moves.lock();
            st.working.remove(&self.id);
            st.moving.remove(&self.id);
        }
        self.moves.changed.notify_waiters();
    }
}

impl TreeMoves {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `ready` finds the state fit (and says how), then lets `register` record
    /// itself under a new id, both under one lock.
    async fn wait_then<R>(
        &self,
        ready: impl Fn(&State) -> Option<R>,
        register: impl FnOnce(&mut State, u64, R),
    ) -> u64 {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(how) = ready(&st) {
                    st.next_id += 1;
                    let id = st.next_id;
                    register(&mut st, id, how);
                    return id;
                }
            }
            notified.await;
        }
    }

    /// Runs `op`, an operation that writes or deletes keys in the directories whose paths
    /// `paths` gives (read from the namespace once no rename moves any of them, and stable
    /// until `op` ends: a rename of one of them or of a directory above waits for it).
    /// `None` from `paths` (a directory gone) runs `op` unregistered, to fail on its own.
    pub(super) async fn work<T>(
        &self,
        paths: impl Fn() -> Option<Vec<String>>,
        op: impl Future<Output = T>,
    ) -> T {
        if REGISTERED.try_with(|_| ()).is_ok() {
            return op.await;
        }
        let id = self
            .wait_then(
                |st| match paths() {
                    Some(p) => {
                        let moved = st
                            .moving
                            .values()
                            .any(|m| p.iter().any(|p| covers(&m[0], p) || covers(&m[1], p)));
                        (!moved).then_some(Some(p))
                    }
                    None => Some(None),
                },
                |st, id, p| {
                    if let Some(p) = p {
                        st.working.insert(id, p);
                    }
                },
            )
            .await;
        let _registration = Registration { moves: self, id };
        REGISTERED.scope((), op).await
    }

    /// Runs `mv`, the move of the directory at `src` to `dst`, inside an operation registered
    /// with [`Self::work`] for their parents: from now on operations under either path wait;
    /// `mv` starts once those already at work there have ended.
    pub(super) async fn moving<T>(&self, src: &str, dst: &str, mv: impl Future<Output = T>) -> T {
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            let id = st.next_id;
            st.moving.insert(id, [src.to_string(), dst.to_string()]);
            id
        };
        let _registration = Registration { moves: self, id };
        self.wait_then(
            |st| {
                let busy = st
                    .working
                    .values()
                    .flatten()
                    .any(|p| covers(src, p) || covers(dst, p));
                (!busy).then_some(())
            },
            |_, _, ()| {},
        )
        .await;
        mv.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_directory_covers_itself_and_what_is_below_it_only() {
        assert!(covers("a/b", "a/b"));
        assert!(covers("a/b", "a/b/c"));
        assert!(!covers("a/b", "a/bc"));
        assert!(!covers("a/b", "a"));
        assert!(covers("", "x"));
    }

    fn paths(p: &[&str]) -> impl Fn() -> Option<Vec<String>> {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        move || Some(p.clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_below_a_moving_directory_waits_and_a_move_waits_for_work_below_it() {
        let moves = Arc::new(TreeMoves::default());
        let log = Arc::new(Mutex::new(Vec::<&str>::new()));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        // An upload under D/sub is at work.
        let upload = {
            let (moves, log) = (moves.clone(), log.clone());
            tokio::spawn(async move {
                moves
                    .work(paths(&["D/sub"]), async {
                        let _ = started_tx.send(());
                        let _ = finish_rx.await;
                        log.lock().unwrap().push("upload");
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        // The rename of D (its parent is the root) waits for it.
        let rename = {
            let (moves, log) = (moves.clone(), log.clone());
            tokio::spawn(async move {
                moves
                    .work(paths(&[""]), async {
                        moves
                            .moving("D", "E", async {
                                log.lock().unwrap().push("move");
                                // A write of a parent's marker inside the rename registers nothing.
                                moves.work(paths(&["D"]), async {}).await;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                log.lock().unwrap().push("moved");
                            })
                            .await
                    })
                    .await
            })
        };
        // Until the rename is registered, nothing else can be told apart; wait for it.
        while moves.lock().moving.is_empty() {
            tokio::task::yield_now().await;
        }
        // Work elsewhere goes on; work under E waits for the move.
        moves.work(paths(&["F"]), async {}).await;
        let later = {
            let (moves, log) = (moves.clone(), log.clone());
            tokio::spawn(async move {
                moves
                    .work(paths(&["E/x"]), async { log.lock().unwrap().push("later") })
                    .await
            })
        };
        assert!(
            log.lock().unwrap().is_empty(),
            "the move started before the upload ended"
        );
        finish_tx.send(()).unwrap();
        upload.await.unwrap();
        rename.await.unwrap();
        later.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["upload", "move", "moved", "later"]);
        assert!(moves.lock().working.is_empty() && moves.lock().moving.is_empty());
    }
}
