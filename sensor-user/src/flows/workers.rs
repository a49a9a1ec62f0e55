//! The matching stage sharded by flow hash over worker threads: each worker owns
//! the flows that hash to it (reassembly, HTTP, Hyperscan streams) and its own
//! Hyperscan scratch, so no lock is taken per packet.
//!
//! A finding's block is decided on the worker that found it ([`OnFinding`]:
//! the shared blocker): one thread hop less between the leaking packet and its
//! block.
//!
//! Jobs go to a worker over a bounded channel: a slow worker holds the pipeline
//! back, the ring fills, and the kernel counts `ring_full` — nothing is dropped
//! silently. Records travel in batches ([`Workers::flush`] after each batch the
//! pipeline takes from the ring, at [`BATCH`], or at an urgent record): a send
//! to a sleeping worker is a futex wake and two context switches, which per
//! record were most of the daemon's CPU in the live benchmark
//! (docs/performance.md). Reports come back over an unbounded channel, so a
//! worker never waits on the pipeline (no cycle, no deadlock).

use std::{
    hash::{Hash as _, Hasher as _},
    sync::Arc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use super::streams::{StreamStats, StreamTable};
use crate::{
    capture::record::Record,
    matcher::{
        engine::{RuleError, RuleSet},
        finding::{Finding, Services},
    },
};

/// What a worker does with each finding before reporting it (the blocker's
/// decision: a block waits for no further thread). `service`: its name.
pub trait OnFinding: Send + Sync + 'static {
    type Out: Send + 'static;
    fn on_finding(&self, f: &Finding, service: &str, now: Instant) -> Self::Out;
}

/// No hook.
impl OnFinding for () {
    type Out = ();
    fn on_finding(&self, _: &Finding, _: &str, _: Instant) {}
}

enum Job {
    Records(Vec<Record>),
    Tick(Instant),
    /// New rules for new flows (a reload).
    Rules(Arc<RuleSet>, Arc<Services>),
}

/// What workers send back.
#[derive(Debug)]
pub enum Report<D = ()> {
    /// Findings, with what the hook made of each (when there is one).
    Found(Vec<(Finding, Option<D>)>),
    /// A worker's cumulative counters (on every tick).
    Stats(usize, StreamStats),
}

/// Where the workers' reports arrive.
pub type Reports<D = ()> = Receiver<Report<D>>;

pub struct Workers {
    jobs: Vec<Sender<Job>>,
    /// Per worker, records not yet sent.
    pending: Vec<Vec<Record>>,
    handles: Vec<JoinHandle<()>>,
}

/// Records per send at most: a burst reaches a worker while the pipeline
/// still reads the rest.
pub const BATCH: usize = 64;

/// Queued jobs per worker before the pipeline waits: with full batches, the
/// 8,192 records a worker could queue one at a time before.
const QUEUE: usize = 128;

impl Workers {
    /// Starts `n` workers (at least one); `cap` flows per worker, `buffer`
    /// out-of-order bytes per flow direction; `hook`: sees each finding first.
    #[allow(clippy::too_many_arguments)]
    pub fn start<H: OnFinding>(
        n: usize,
        rules: &Arc<RuleSet>,
        services: &Arc<Services>,
        idle: Duration,
        cap: usize,
        buffer: usize,
        limits: crate::proto::coding::Limits,
        hook: Option<&Arc<H>>,
        budget: Option<&Arc<crate::shared::budget::Budget>>,
    ) -> Result<(Self, Reports<H::Out>), RuleError> {
        let (report_tx, report_rx) = unbounded();
        let mut jobs = Vec::new();
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            // Scratch is allocated here, so a failure is reported before any thread runs.
            let mut table = StreamTable::new(
                Arc::clone(rules),
                Arc::clone(services),
                idle,
                cap,
                buffer,
                limits,
            )?;
            if let Some(b) = budget {
                table.set_budget(Arc::clone(b));
            }
            let (tx, rx) = bounded::<Job>(QUEUE);
            let report = report_tx.clone();
            let hook = hook.cloned();
            let mut names = Arc::clone(services);
            let h = thread::Builder::new()
                .name(format!("matcher-{i}"))
                .spawn(move || {
                    crate::capture::sched::enter("matcher");
                    let mut found = Vec::new();
                    for job in rx {
                        let now = Instant::now();
                        match job {
                            Job::Records(rs) => {
                                for r in &rs {
                                    table.on_record(r, now, &mut found);
                                }
                            }
                            Job::Tick(t) => {
                                table.sweep(t, &mut found);
                                let _ = report.send(Report::Stats(i, table.stats.clone()));
                            }
                            Job::Rules(rules, services) => {
                                names = Arc::clone(&services);
                                if let Err(e) = table.set_rules(rules, services) {
                                    log::error!(
                                        "matcher {i}: the reloaded rules need scratch: {e}; keeping the old ones"
                                    );
                                }
                            }
                        }
                        if found.is_empty() {
                            continue;
                        }
                        let decided = found
                            .drain(..)
                            .map(|f| {
                                let service = names.name(f.service).unwrap_or("unknown");
                                let out = hook.as_deref().map(|h| h.on_finding(&f, service, now));
                                (f, out)
                            })
                            .collect();
                        if report.send(Report::Found(decided)).is_err() {
                            break;
                        }
                    }
                    // Channel closed: the table drops here and closes its streams.
                    let _ = report.send(Report::Stats(i, table.stats.clone()));
                })
                .map_err(|e| RuleError::Database(format!("starting a matcher thread: {e}")))?;
            jobs.push(tx);
            handles.push(h);
        }
        let pending = jobs.iter().map(|_| Vec::new()).collect();
        Ok((
            Self {
                jobs,
                pending,
                handles,
            },
            report_rx,
        ))
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues a record for the worker that owns its flow, sent with the
    /// next [`Self::flush`], once [`BATCH`] wait, or at once with those
    /// before it if it is [`Record::urgent`] (the worker blocks a leaking
    /// first request: it waits for no other record). Returns the
    /// records lost because that worker is gone (it panicked: a bug), so the
    /// caller can count and say so.
    pub fn dispatch(&mut self, rec: Record) -> usize {
        let urgent = rec.urgent();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        rec.hdr.flow.hash(&mut h);
        let i = (h.finish() % self.jobs.len() as u64) as usize;
        let Some(p) = self.pending.get_mut(i) else {
            return 1;
        };
        p.push(rec);
        if p.len() < BATCH && !urgent {
            return 0;
        }
        self.send(i)
    }

    /// Sends every worker its queued records; returns those lost to a
    /// worker that is gone.
    pub fn flush(&mut self) -> usize {
        (0..self.jobs.len()).map(|i| self.send(i)).sum()
    }

    fn send(&mut self, i: usize) -> usize {
        let batch = std::mem::take(&mut self.pending[i]);
        let n = batch.len();
        if n == 0 || self.jobs[i].send(Job::Records(batch)).is_ok() {
            0
        } else {
            n
        }
    }

    /// New rules for new flows on every worker (a reload), after the records
    /// queued before it. Returns the records lost to a worker that is gone.
    pub fn set_rules(&mut self, rules: &Arc<RuleSet>, services: &Arc<Services>) -> usize {
        let lost = self.flush();
        for j in &self.jobs {
            let _ = j.send(Job::Rules(Arc::clone(rules), Arc::clone(services)));
        }
        lost
    }

    /// Idle sweeps and counter reports, after the records queued before it.
    /// Returns the records lost to a worker that is gone.
    pub fn tick(&mut self, now: Instant) -> usize {
        let lost = self.flush();
        for j in &self.jobs {
            let _ = j.send(Job::Tick(now));
        }
        lost
    }

    /// Stops the workers after they drained their queues (the records
    /// queued here first). Returns the records lost to a worker that is gone.
    pub fn shutdown(mut self) -> usize {
        let lost = self.flush();
        drop(self.jobs);
        for h in self.handles {
            let _ = h.join();
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fixtures::{FrameBuilder, record},
        matcher::rules,
    };
    use sensor_common::record::{RecordKind, flags};

    /// `n` workers of `cap` flows each, the built-in rules, no hook.
    fn start(n: usize, cap: usize) -> (Workers, Reports) {
        let set = Arc::new(RuleSet::compile(rules::builtin()).unwrap());
        Workers::start(
            n,
            &set,
            &Arc::default(),
            Duration::from_mins(1),
            cap,
            1 << 16,
            crate::proto::coding::Limits::default(),
            None::<&Arc<()>>,
            None,
        )
        .unwrap()
    }

    #[test]
    fn flows_spread_over_workers_and_every_leak_comes_back() {
        let (mut w, reports) = start(3, 100);
        assert_eq!(w.len(), 3);
        for port in 40000..40030u16 {
            let req = format!(
                "GET /x?password=5f4dcc3b5aa765d61d8327deb882cf99&n={port} HTTP/1.1\r\n\r\n"
            );
            let mut r = record(
                RecordKind::Sample,
                flags::FROM_CLIENT | flags::FIRST_PAYLOAD,
                &FrameBuilder::tcp("192.0.2.10", port, "198.51.100.2", 80)
                    .payload(req)
                    .build(),
            );
            r.hdr.service = 1;
            w.dispatch(r);
        }
        w.tick(Instant::now());
        w.shutdown();
        let mut found = 0;
        let mut busy = std::collections::HashSet::new();
        for rep in reports.try_iter() {
            match rep {
                Report::Found(v) => found += v.len(),
                Report::Stats(i, s) if s.bytes_scanned > 0 => {
                    busy.insert(i);
                }
                Report::Stats(..) => {}
            }
        }
        assert_eq!(found, 30, "one per flow");
        assert!(busy.len() >= 2, "flows spread over workers: {busy:?}");
    }

    #[test]
    fn records_wait_for_a_flush_a_full_batch_or_an_urgent_one() {
        let (mut w, reports) = start(1, 1000);
        // Mid-stream segments (no first payload: nothing waits on them).
        let leak = |port: u16, first: bool| {
            let mut r = record(
                RecordKind::Sample,
                flags::FROM_CLIENT | if first { flags::FIRST_PAYLOAD } else { 0 },
                &FrameBuilder::tcp("192.0.2.10", port, "198.51.100.2", 80)
                    .seq(1000)
                    .payload("GET /x?password=5f4dcc3b5aa765d61d8327deb882cf99 HTTP/1.1\r\n\r\n")
                    .build(),
            );
            r.hdr.service = 1;
            r
        };
        let found = |want: usize| {
            let mut n = 0;
            while n < want {
                match reports.recv_timeout(Duration::from_secs(10)) {
                    Ok(Report::Found(v)) => n += v.len(),
                    Ok(Report::Stats(..)) => {}
                    Err(e) => panic!("{n} of {want} findings: {e}"),
                }
            }
            n
        };
        let quiet = |what: &str| {
            assert!(
                reports.recv_timeout(Duration::from_millis(300)).is_err(),
                "{what}"
            );
        };
        for port in 0..BATCH as u16 - 1 {
            assert_eq!(w.dispatch(leak(40000 + port, false)), 0);
        }
        quiet("nothing is sent before a flush, a full batch or an urgent record");
        assert_eq!(w.flush(), 0);
        assert_eq!(found(BATCH - 1), BATCH - 1);
        // A full batch goes without a flush.
        for port in 0..BATCH as u16 {
            assert_eq!(w.dispatch(leak(41000 + port, false)), 0);
        }
        assert_eq!(found(BATCH), BATCH);
        // So does a first payload, with what waited before it.
        assert_eq!(w.dispatch(leak(42000, false)), 0);
        quiet("one mid-stream record waits");
        assert_eq!(w.dispatch(leak(42001, true)), 0);
        assert_eq!(found(2), 2);
        assert_eq!(w.shutdown(), 0);
    }
}
