//! Real-time scheduling of the decision path (`realtime_priority`): the ring
//! reader, the pipeline and the matcher threads run SCHED_FIFO, so a block is
//! not queued behind softirq and ordinary work on a saturated gateway (the
//! bench measured it: `cargo xtask bench --only block`). Off by default: a
//! busy real-time thread (a flood) runs before every ordinary task, ksoftirqd
//! included, and only the kernel's RT throttling (`kernel.sched_rt_runtime_us`)
//! keeps the rest running. docs/operations.md says when to turn it on.

use std::sync::atomic::{AtomicU8, Ordering};

/// The highest SCHED_FIFO priority.
pub const MAX_PRIORITY: u8 = 99;

/// The priority decision-path threads take as they start (0: none).
static PRIORITY: AtomicU8 = AtomicU8::new(0);

#[derive(Debug, thiserror::Error)]
#[error(
    "realtime_priority {priority}: {err} (it needs CAP_SYS_NICE, or RLIMIT_RTPRIO of at least {priority}: under systemd LimitRTPRIO={priority} and RestrictRealtime=no)"
)]
pub struct SchedError {
    priority: u8,
    err: std::io::Error,
}

/// Sets the priority the decision-path threads take, after checking on a
/// thread of its own that the process may take it (a refusal is an error
/// at start, not a slow sensor later).
pub fn set(priority: u8) -> Result<(), SchedError> {
    if priority > 0 {
        let probe = std::thread::spawn(move || fifo(priority));
        probe
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread panicked")))
            .map_err(|err| SchedError { priority, err })?;
    }
    PRIORITY.store(priority, Ordering::Relaxed);
    Ok(())
}

/// Called by each decision-path thread as it starts: takes the configured
/// priority. A failure (the process lost the right since `set`) is logged and
/// the thread goes on at ordinary priority.
pub fn enter(thread: &str) {
    let p = PRIORITY.load(Ordering::Relaxed);
    if p > 0
        && let Err(e) = fifo(p)
    {
        log::error!(
            "thread {thread}: cannot take realtime priority {p}: {e}; it runs at ordinary priority"
        );
    }
}

/// SCHED_FIFO at `priority` for the calling thread; threads it starts do not
/// inherit it (SCHED_RESET_ON_FORK).
fn fifo(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority.into(),
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let r = unsafe {
        libc::sched_setscheduler(
            0,
            libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
            &raw const param,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Keeps the calling thread on `cpu`. For benchmarks and tests that run the
/// XDP program with `BPF_PROG_TEST_RUN`, which runs it on the caller's CPU:
/// its `HOT` slots are per CPU (`sensor_common::hot`) as a receive queue's
/// flows are, and a measurement that migrates halfway measures two CPUs.
pub fn pin(cpu: usize) -> std::io::Result<()> {
    pin_to(&[cpu])
}

/// Keeps the calling thread on `cpus` (an empty list: EINVAL).
pub fn pin_to(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call only reads it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The CPU the calling thread runs on now (0 if the kernel cannot say).
pub fn current_cpu() -> usize {
    // SAFETY: a plain query.
    usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0)
}

/// [`pin`] to the CPU the calling thread is running on.
pub fn pin_here() -> std::io::Result<()> {
    pin(current_cpu())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: plain query of the calling thread.
        let p = unsafe { libc::sched_getscheduler(0) };
        p & !libc::SCHED_RESET_ON_FORK
    }

    #[test]
    fn a_thread_takes_fifo_and_its_children_do_not() {
        if !crate::capture::privilege::can_load_xdp() {
            eprintln!("skipped: needs root (CAP_SYS_NICE)");
            return;
        }
        std::thread::spawn(|| {
            fifo(3).unwrap();
            assert_eq!(policy(), libc::SCHED_FIFO);
            let child = std::thread::spawn(policy).join().unwrap();
            assert_eq!(child, libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
        assert_eq!(policy(), libc::SCHED_OTHER, "the test thread is untouched");
    }

    /// The CPUs the calling thread may run on.
    fn allowed() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is valid; the call writes into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    #[test]
    fn a_pinned_thread_may_run_on_its_cpu_alone() {
        std::thread::spawn(|| {
            let all = allowed();
            pin_here().unwrap();
            assert_eq!(allowed(), [current_cpu()]);
            pin_to(&all).unwrap();
            assert_eq!(allowed(), all, "pin_to widens it again");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_refused_priority_names_what_it_needs() {
        let e = SchedError {
            priority: 10,
            err: std::io::Error::from_raw_os_error(libc::EPERM),
        }
        .to_string();
        assert!(e.contains("realtime_priority 10"), "{e}");
        assert!(
            e.contains("CAP_SYS_NICE") && e.contains("LimitRTPRIO=10"),
            "{e}"
        );
    }
}
