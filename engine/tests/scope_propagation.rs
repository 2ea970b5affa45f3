//! Structured concurrency: errors and panics cancel siblings and come out of the scope;
//! dropping a scope cancels its children; detached tasks report to their sink.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use percore_engine::scope::{fail_after, move_on_after, CancelScope};
use percore_engine::time::sleep;
use percore_engine::{scope, spawn_detached, ScopeError, TaskFailure};

/// Sets a flag when dropped: proves a future was cancelled (dropped), not forgotten.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn scope_waits_for_every_child() {
    percore_engine::block_on(async {
        let done = Rc::new(Cell::new(0));
        let d = done.clone();
        let r: Result<&str, ScopeError<()>> = scope(|s| async move {
            for i in 0..5u64 {
                let d = d.clone();
                s.spawn(async move {
                    sleep(Duration::from_millis(i)).await;
                    d.set(d.get() + 1);
                    Ok(())
                });
            }
            Ok("body")
        })
        .await;
        assert_eq!(r.unwrap(), "body");
        assert_eq!(done.get(), 5, "the scope returned only after every child");
    });
}

#[test]
fn a_child_error_cancels_its_siblings_and_the_body() {
    percore_engine::block_on(async {
        let sibling_dropped = Rc::new(Cell::new(false));
        let body_dropped = Rc::new(Cell::new(false));
        let (sd, bd) = (sibling_dropped.clone(), body_dropped.clone());
        let r: Result<(), ScopeError<&str>> = scope(|s| async move {
            let flag = DropFlag(sd);
            s.spawn(async move {
                let _flag = flag;
                sleep(Duration::from_secs(3600)).await;
                Ok(())
            });
            s.spawn(async {
                sleep(Duration::from_millis(2)).await;
                Err("child failed")
            });
            let _flag = DropFlag(bd);
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await;
        assert_eq!(r.unwrap_err().into_error(), Some("child failed"));
        assert!(sibling_dropped.get(), "sibling cancelled");
        assert!(body_dropped.get(), "body cancelled");
    });
}

#[test]
fn a_child_panic_comes_out_of_the_scope() {
    percore_engine::block_on(async {
        let r: Result<(), ScopeError<()>> = scope(|s| async move {
            s.spawn(async {
                sleep(Duration::from_millis(1)).await;
                panic!("child exploded");
            });
            sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await;
        let err = r.unwrap_err();
        assert!(err.is_panic());
        assert!(format!("{err:?}").contains("child exploded"));
    });
}

#[test]
fn a_body_error_cancels_the_children() {
    percore_engine::block_on(async {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let r: Result<(), ScopeError<u32>> = scope(|s| async move {
            let flag = DropFlag(d);
            s.spawn(async move {
                let _flag = flag;
                std::future::pending::<()>().await;
                Ok(())
            });
            percore_engine::yield_now().await;
            Err(42)
        })
        .await;
        assert_eq!(r.unwrap_err().into_error(), Some(42));
        assert!(dropped.get());
    });
}

#[test]
fn dropping_a_scope_cancels_its_children() {
    percore_engine::block_on(async {
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let r = move_on_after(
            Duration::from_millis(5),
            scope(|s| async move {
                let flag = DropFlag(d);
                s.spawn(async move {
                    let _flag = flag;
                    std::future::pending::<()>().await;
                    Ok::<(), ()>(())
                });
                std::future::pending::<()>().await;
                Ok(())
            }),
        )
        .await;
        assert!(r.is_none());
        assert!(dropped.get(), "children of a dropped scope are cancelled");
    });
}

#[test]
fn nested_scopes_propagate_outwards() {
    percore_engine::block_on(async {
        let r: Result<(), ScopeError<String>> = scope(|outer| async move {
            outer.spawn(async {
                let inner: Result<(), ScopeError<String>> = scope(|s| async move {
                    s.spawn(async { Err("deep".to_string()) });
                    Ok(())
                })
                .await;
                inner.map_err(|e| format!("inner: {}", e.into_error().unwrap_or_default()))
            });
            Ok(())
        })
        .await;
        assert_eq!(r.unwrap_err().into_error().unwrap(), "inner: deep");
    });
}

#[test]
fn deadlines_move_on_or_fail() {
    percore_engine::block_on(async {
        assert_eq!(
            move_on_after(Duration::from_secs(1), async { 3 }).await,
            Some(3)
        );
        assert_eq!(
            move_on_after(Duration::from_millis(1), sleep(Duration::from_secs(9))).await,
            None
        );
        assert!(
            fail_after(Duration::from_millis(1), sleep(Duration::from_secs(9)))
                .await
                .is_err()
        );
        let cs = CancelScope::with_deadline(
            percore_engine::time::Instant::now() + Duration::from_secs(60),
        );
        let cs2 = cs.clone();
        percore_engine::spawn(async move {
            sleep(Duration::from_millis(2)).await;
            cs2.set_deadline(percore_engine::time::Instant::now());
        })
        .detach(|_| {});
        assert!(cs.run(sleep(Duration::from_secs(60))).await.is_none());
        assert!(cs.is_cancelled());
    });
}

#[test]
fn detached_tasks_report_errors_panics_and_cancellation() {
    percore_engine::block_on(async {
        let seen = Rc::new(RefCell::new(Vec::<String>::new()));
        let s1 = seen.clone();
        spawn_detached(async { Err::<(), _>("bad") }, move |f| {
            s1.borrow_mut().push(match f {
                TaskFailure::Failed(e) => format!("failed:{e}"),
                TaskFailure::Aborted(j) => format!("aborted:{j}"),
            })
        });
        let s2 = seen.clone();
        spawn_detached(
            async {
                panic!("boom");
                #[allow(unreachable_code)]
                Ok::<(), ()>(())
            },
            move |f| {
                s2.borrow_mut().push(match f {
                    TaskFailure::Failed(()) => "failed".into(),
                    TaskFailure::Aborted(j) => format!("aborted:{}", j.is_panic()),
                })
            },
        );
        let s3 = seen.clone();
        spawn_detached(async { Ok::<(), ()>(()) }, move |_| {
            s3.borrow_mut().push("ok-should-not-report".into())
        });
        sleep(Duration::from_millis(2)).await;
        let seen = seen.borrow();
        assert!(seen.contains(&"failed:bad".to_string()), "{seen:?}");
        assert!(seen.contains(&"aborted:true".to_string()), "{seen:?}");
        assert_eq!(seen.len(), 2, "success is not reported: {seen:?}");
    });
}

#[test]
fn a_cancel_reaches_every_task_running_in_the_scope() {
    percore_engine::block_on(async {
        let scope = CancelScope::new();
        let runs: Vec<_> = (0..3)
            .map(|_| {
                let s = scope.clone();
                percore_engine::spawn(async move {
                    s.run(percore_engine::time::sleep(Duration::from_secs(60)))
                        .await
                })
            })
            .collect();
        // Every task is waiting in its run before the cancel.
        percore_engine::time::sleep(Duration::from_millis(5)).await;
        scope.cancel();
        for run in runs {
            let ended = move_on_after(Duration::from_secs(5), run).await;
            assert_eq!(
                ended.map(Result::unwrap),
                Some(None),
                "every run was cancelled"
            );
        }
    });
}
