//! The live daemon loop: the ring reader on a thread of its own, the signal
//! handlers and servers on tokio, the pipeline on its own thread (record
//! handling never blocks tokio), records and ticks meeting in one queue so the
//! pipeline stays single-threaded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::watch;

use super::Pipeline;
use crate::{
    capture::ring::{RecordResult, RingReader, Rings},
    sinks::metrics::{self, Metrics},
    targets::learning::WatchSink,
};

/// What the pipeline thread receives.
enum Msg {
    /// What one read of the rings released (`RingReader::run`).
    Records(Vec<RecordResult>),
    Tick,
    /// SIGHUP: reopen the output files (log rotation).
    Reopen,
    /// SIGHUP: a config read and compiled off this thread, or why it failed.
    Reload(Box<anyhow::Result<super::reload::Reloaded>>),
    /// A control-socket request and where its reply goes.
    Control(
        super::control::Request,
        tokio::sync::oneshot::Sender<super::control::Reply>,
    ),
}

/// The control socket, bound before the program is attached, and its path.
pub struct ControlSocket {
    pub listener: std::os::unix::net::UnixListener,
    pub path: std::path::PathBuf,
}

/// Queued messages (batches of records, ticks) before a sender waits.
/// A queue this long measured a lower idle block latency than one of 128
/// batches (block bench, realtime idle p50 0.14–0.19 ms against 0.38–0.66,
/// alternating runs; docs/performance.md): records are bounded by
/// [`IN_FLIGHT`] instead.
const QUEUE: usize = 8192;

/// Records handed to the pipeline and not yet handled before the ring reader
/// waits (and the kernel counts `ring_full`): the ring, not this queue, is
/// where a burst waits.
const IN_FLIGHT: usize = 8192;

/// Handed-over records the pipeline has not handled yet.
struct InFlight(AtomicUsize);

impl InFlight {
    /// Waits while [`IN_FLIGHT`] records are queued, then counts `n` more;
    /// not once `stop` is set or the pipeline thread (the other holder of
    /// `this`) is gone, when the send that follows says so.
    fn admit(this: &Arc<Self>, n: usize, stop: &AtomicBool) {
        while this.0.load(Ordering::Acquire) >= IN_FLIGHT
            && !stop.load(Ordering::Relaxed)
            && Arc::strong_count(this) > 1
        {
            thread::sleep(Duration::from_micros(100));
        }
        this.0.fetch_add(n, Ordering::AcqRel);
    }

    fn done(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::AcqRel);
    }
}

impl<W: WatchSink + Send + 'static> Pipeline<W> {
    /// Runs until SIGTERM or SIGINT: reads `ring`, serves `metrics` on
    /// `metrics_addr` and `control` requests, takes the matcher workers'
    /// `reports`, reopens the output files on SIGHUP. Returns once everything
    /// has drained.
    pub fn serve(
        mut self,
        ring: Rings,
        reports: Option<crate::flows::workers::Reports<crate::sinks::block::Blocked>>,
        listener: std::net::TcpListener,
        control: Option<ControlSocket>,
        reload: Option<Arc<super::reload::ReloadSource>>,
    ) -> anyhow::Result<()> {
        let metrics_addr = listener.local_addr().context("the metrics listener")?;
        let metrics: Arc<Metrics> = Arc::clone(&self.metrics);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (msg_tx, msg_rx) = crossbeam_channel::bounded::<Msg>(QUEUE);
        let in_flight = Arc::new(InFlight(AtomicUsize::new(0)));
        let handled = Arc::clone(&in_flight);
        let reports = reports.unwrap_or_else(crossbeam_channel::never);

        let pipeline = thread::Builder::new()
            .name("pipeline".into())
            .spawn(move || {
                crate::capture::sched::enter("pipeline");
                loop {
                    crossbeam_channel::select! {
                        recv(msg_rx) -> m => match m {
                            Ok(Msg::Records(rs)) => {
                                let n = rs.len();
                                self.handle_batch(rs, Instant::now());
                                handled.done(n);
                            }
                            Ok(Msg::Tick) => {
                                self.tick(Instant::now());
                                // systemd's watchdog: the pipeline still turns.
                                systemd(&[sd_notify::NotifyState::Watchdog]);
                            }
                            Ok(Msg::Reopen) => self.reopen(),
                            Ok(Msg::Reload(r)) => match *r {
                                Ok(r) => self.reload(r),
                                Err(e) => self.reload_failed(&e),
                            },
                            Ok(Msg::Control(req, reply)) => {
                                let _ = reply.send(self.control(&req));
                            }
                            Err(_) => break,
                        },
                        recv(reports) -> r => if let Ok(r) = r {
                            self.report(r, Instant::now());
                        },
                    }
                }
                // Input is done: let the workers drain, then take their last reports.
                self.stop_workers();
                for r in reports.try_iter() {
                    self.report(r, Instant::now());
                }
                self.save_learned(Instant::now(), true);
            })
            .context("starting the pipeline thread")?;
        let ring_stop = Arc::new(AtomicBool::new(false));
        let ring_tx = msg_tx.clone();
        let reader = {
            let stop = Arc::clone(&ring_stop);
            thread::Builder::new()
                .name("ring".into())
                .spawn(move || {
                    let stop_admit = Arc::clone(&stop);
                    RingReader::new(ring).run(&stop, |rs| {
                        InFlight::admit(&in_flight, rs.len(), &stop_admit);
                        ring_tx.send(Msg::Records(std::mem::take(rs))).is_ok()
                    })
                })
                .context("starting the ring reader")?
        };

        rt.block_on(async {
            let mut server_stop = stop_rx.clone();
            let server = metrics::serve(listener, Arc::clone(&metrics), async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
            .with_context(|| format!("serving metrics on {metrics_addr}"))?;
            log::info!("metrics on http://{metrics_addr}/metrics");
            let hup_tx = msg_tx.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("installing the SIGHUP handler")?;
            let reopener = tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    log::info!("SIGHUP: reopening the output files, reloading the config");
                    if hup_tx.send(Msg::Reopen).is_err() {
                        break;
                    }
                    // Reading and compiling take a while: not on tokio, not on
                    // the pipeline thread.
                    if let Some(src) = reload.clone() {
                        let tx = hup_tx.clone();
                        std::thread::spawn(move || {
                            let r = super::reload::prepare(&src);
                            let _ = tx.send(Msg::Reload(Box::new(r)));
                        });
                    }
                }
            });
            let controller = control.map(|c| {
                log::info!("control socket on {}", c.path.display());
                let tx = msg_tx.clone();
                tokio::spawn(super::control::serve(c.listener, c.path, move |req| {
                    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
                    tx.send(Msg::Control(req, reply_tx)).ok().map(|()| reply_rx)
                }))
            });
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            let ticker = tokio::spawn(async move {
                loop {
                    ticks.tick().await;
                    if msg_tx.send(Msg::Tick).is_err() {
                        break;
                    }
                }
            });
            metrics.set_ready(true);
            // Type=notify: attached, rules loaded, ring read, metrics served.
            systemd(&[sd_notify::NotifyState::Ready]);

            wait_for_signal().await?;
            log::info!("shutting down");
            systemd(&[sd_notify::NotifyState::Stopping]);
            metrics.set_ready(false);
            let _ = stop_tx.send(true);
            ticker.abort();
            reopener.abort();
            if let Some(c) = controller {
                c.abort();
            }
            server
                .await
                .context("metrics server task")?
                .context("metrics server")?;
            anyhow::Ok(())
        })?;
        // The reader stops (its sender dropped); dropping the runtime drops the
        // ticker's sender: the pipeline then drains and ends.
        ring_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("ring reader panicked"))?
            .context("reading the ring buffer")?;
        drop(rt);
        pipeline
            .join()
            .map_err(|_| anyhow::anyhow!("pipeline thread panicked"))?;
        Ok(())
    }
}

/// Tells systemd (a no-op outside a unit).
fn systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::debug!("notifying systemd: {e}");
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_waits_while_the_pipeline_holds_its_records() {
        let stop = AtomicBool::new(false);
        let reader = Arc::new(InFlight(AtomicUsize::new(0)));
        let pipeline = Arc::clone(&reader);
        InFlight::admit(&reader, IN_FLIGHT, &stop);
        let done = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            pipeline.done(IN_FLIGHT);
            pipeline
        });
        let t = Instant::now();
        InFlight::admit(&reader, 1, &stop);
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        let pipeline = done.join().unwrap();
        assert_eq!(reader.0.load(Ordering::Relaxed), 1);

        // Full, and then no pipeline: the send after says so.
        pipeline.0.store(IN_FLIGHT, Ordering::Relaxed);
        drop(pipeline);
        let stop = Arc::new(stop);
        assert!(gives_up(reader, &stop), "waited for a gone pipeline");
        // Full, and stopping.
        let full = Arc::new(InFlight(AtomicUsize::new(IN_FLIGHT)));
        let _pipeline = Arc::clone(&full);
        stop.store(true, Ordering::Relaxed);
        assert!(gives_up(full, &stop), "waited after the stop");
    }

    /// Whether `admit` returns within 5 s: run on a thread, so a wait that
    /// never ends fails the test instead of hanging it. `this` moves there
    /// (a clone would count as the pipeline).
    fn gives_up(this: Arc<InFlight>, stop: &Arc<AtomicBool>) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::clone(stop);
        thread::spawn(move || {
            InFlight::admit(&this, 1, &stop);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(5)).is_ok()
    }
}
