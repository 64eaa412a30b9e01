//! Complexity guards for the unit tests: each parser of outside input is timed at size n
//! and 4n. Linear work takes about 4 times as long, quadratic 16; the threshold is 8. The
//! time is the running thread's CPU time, the least of five runs, so a busy machine (other
//! processes, other tests) neither fails a guard nor lets a quadratic one pass.

/// The least CPU time of five runs of `work`, in seconds.
pub(crate) fn best_cpu_time(mut work: impl FnMut()) -> f64 {
    #[repr(C)]
    struct Timespec {
        secs: i64,
        nanos: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, now: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let now = || {
        let mut t = Timespec { secs: 0, nanos: 0 };
        // SAFETY: clock_gettime writes one timespec to a valid pointer; the libc the standard
        // library links is the one declared.
        let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
        assert!(ok, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        t.secs as f64 + t.nanos as f64 * 1e-9
    };
    (0..5)
        .map(|_| {
            let started = now();
            work();
            now() - started
        })
        .fold(f64::INFINITY, f64::min)
}

/// Asserts that `work` on `large` (4 times `small`'s size) costs under 8 times `work` on
/// `small`; `what` names the shape in the failure.
pub(crate) fn assert_linear<T: ?Sized>(what: &str, small: &T, large: &T, mut work: impl FnMut(&T)) {
    let t1 = best_cpu_time(|| work(small));
    let t4 = best_cpu_time(|| work(large));
    assert!(t4 / t1 < 8.0, "{what}: n took {t1:.5} s, 4n {t4:.5} s");
}
